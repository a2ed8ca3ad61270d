"""Span attribute names that jouletrace's processes write and read.

* The **diffusion server** (``servers/diffusion/tracing.py``) sends one batch
  span per pipeline call (:data:`SPAN_KIND` = :data:`BATCH_SPAN`, with the
  members and their work units), a span of no duration as each call begins
  (:data:`BATCH_START_SPAN`) and one request span per request
  (:data:`SPAN_KIND` = :data:`REQUEST_SPAN`); the sidecar's diffusion span
  handler (``sidecar/taps/diffusion.py``) reads them.
* The **load generator** (``loadgen/tracing.py``) puts :data:`TASK` on its client
  span; the sidecar joins it to the server's span by trace id.
* The **sidecar's span forwarder** (``sidecar/taps/vllm_forward.py``) adds the
  ``jouletrace.energy.*`` attributes to vLLM's spans it passes on.

Semantic-convention names (``gen_ai.*``) are OpenTelemetry's; the rest are ours.
"""

from __future__ import annotations

__all__ = [
    "BATCH_ID",
    "BATCH_MEMBERS",
    "BATCH_MEMBER_UNITS",
    "BATCH_SIZE",
    "BATCH_SPAN",
    "BATCH_START_SPAN",
    "CLIENT_REQUEST_ID",
    "DENOISE_STEPS",
    "ENERGY_APPROXIMATE",
    "ENERGY_DECODE_J",
    "ENERGY_FIT_QUALITY",
    "ENERGY_HIGH_J",
    "ENERGY_J",
    "ENERGY_J_PER_OUTPUT_TOKEN",
    "ENERGY_LOW_J",
    "ENERGY_PREFILL_J",
    "ENERGY_RULE",
    "ENERGY_SOURCE",
    "MODEL",
    "OPERATION",
    "OUTPUT_FPS",
    "OUTPUT_FRAMES",
    "OUTPUT_HEIGHT",
    "OUTPUT_UNITS",
    "OUTPUT_WIDTH",
    "REQUEST_ID",
    "REQUEST_SPAN",
    "REQUEST_STATUS",
    "SPAN_KIND",
    "TASK",
    "TENANT",
    "UNIT",
    "WORK_UNITS",
]

# ---- which of our spans this is --------------------------------------------------------
SPAN_KIND = "jouletrace.span"
BATCH_SPAN = "diffusion.batch"  # a value of SPAN_KIND
BATCH_START_SPAN = "diffusion.batch_start"  # a value of SPAN_KIND: a pipeline call began (no duration)
REQUEST_SPAN = "diffusion.request"  # a value of SPAN_KIND

# ---- a diffusion batch (one pipeline call) ------------------------------------------------
BATCH_ID = "jouletrace.batch.id"
BATCH_SIZE = "jouletrace.batch.size"  # items (images or videos) in the batch
BATCH_MEMBERS = "jouletrace.batch.members"  # request ids, one per member
BATCH_MEMBER_UNITS = "jouletrace.batch.member_units"  # work units per member, same order
WORK_UNITS = "jouletrace.work.units"  # pixels x frames x steps x items
DENOISE_STEPS = "jouletrace.denoise.steps"

# ---- a request's output --------------------------------------------------------------------
OUTPUT_WIDTH = "jouletrace.output.width"  # px
OUTPUT_HEIGHT = "jouletrace.output.height"  # px
OUTPUT_FRAMES = "jouletrace.output.frames"
OUTPUT_FPS = "jouletrace.output.fps"  # frames per second of the returned video
OUTPUT_UNITS = "jouletrace.output.units"  # images, or 1 per video
UNIT = "jouletrace.unit"  # image, video
REQUEST_STATUS = "jouletrace.request.status"  # ok, error, disconnected

# ---- who asked for what ------------------------------------------------------------------------
REQUEST_ID = "gen_ai.request.id"  # the server's request id
CLIENT_REQUEST_ID = "jouletrace.request.id"  # the load generator's own id for a request
MODEL = "gen_ai.request.model"
OPERATION = "gen_ai.operation.name"
TASK = "jouletrace.task"  # the workload's task, e.g. text-to-image (set by the client)
TENANT = "jouletrace.tenant"  # who asked (the proxy: a configured header or the OpenAI user field)

# ---- energy the sidecar adds to forwarded spans (joules) ---------------------------------------
ENERGY_J = "jouletrace.energy.joules"
ENERGY_PREFILL_J = "jouletrace.energy.prefill_joules"
ENERGY_DECODE_J = "jouletrace.energy.decode_joules"
ENERGY_J_PER_OUTPUT_TOKEN = "jouletrace.energy.joules_per_output_token"
ENERGY_APPROXIMATE = "jouletrace.energy.approximate"
ENERGY_SOURCE = "jouletrace.energy.source"  # measured source (nvml, rapl, ...) or estimate
ENERGY_RULE = "jouletrace.energy.rule"  # the split rule
# the record's ~95 % interval: an estimate of the split's own uncertainty
ENERGY_LOW_J = "jouletrace.energy.low_joules"
ENERGY_HIGH_J = "jouletrace.energy.high_joules"
ENERGY_FIT_QUALITY = "jouletrace.energy.fit_quality"  # ok, held, ill-conditioned, floor-unmeasured, ...
