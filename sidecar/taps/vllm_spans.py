"""vLLM's ``llm_request`` spans -> request infos, and phase-level work when the plugin is absent.

vLLM (``--otlp-traces-endpoint``) sends one ``llm_request`` span per finished
request: start = arrival; attributes from ``vllm/tracing/utils.py``
(:data:`SPAN_ATTRIBUTES`). From it this handler makes

* a :class:`RequestInfo`: model, prompt/completion tokens, start/end on the
  sidecar clock, and the task from a client span of the same trace (a span
  with ``jouletrace.task``, e.g. the load generator's), joined by trace id in
  either arrival order;
* work events, unless the plugin already supplied this request's work:
  prefill over ``[end - decode - prefill, end - decode]`` (prompt tokens, one
  step) and decode over ``[end - decode, end]`` (completion tokens - 1, one
  step per token, cut into a few pieces that follow the engine's step rate), each
  with its attention work (query-key pairs). The work of the spans handled in one
  drain comes out of :meth:`VllmSpanHandler.flush`, after the step clock has been
  fitted once to all their decode windows.

**No double counting.** The vLLM plugin's per-iteration work is better than
these whole-phase events. The rule: a request's work comes from the plugin
if the plugin claimed it (``claims(request_id)``: it emitted work for it),
else from its span. The plugin's datagram for a request arrives before its
span (vLLM batches span exports), and the plugin source is drained first in
each tick, so the claim is known when the span is handled.

Every value read is checked (:mod:`.validate`) before anything changes: an id
that is not a printable string, a token count that is not a whole number in
range, a latency that is negative, NaN or over a day, or a request id already
handled (a duplicate span) raises :class:`~sidecar.taps.validate.Rejected`, so
the receiver drops that span only and counts why.

Request ids are normalized (:func:`normalize_request_id`): vLLM's id for a
chat request is ``chatcmpl-<X-Request-Id>`` (``cmpl-`` for completions), so
the record is keyed by what the client sent in ``X-Request-Id``.
Units: seconds, tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from sidecar.attribution.events import Phase, RequestInfo, WorkEvent
from sidecar.attribution.records import TapReport
from sidecar.contracts.span_attributes import TASK as TASK_ATTRIBUTE
from sidecar.taps import validate as v
from sidecar.taps.spans import AttrValue, ReceivedSpan, TapOutput
from sidecar.taps.step_clock import StepClock

__all__ = [
    "SPAN_ATTRIBUTES",
    "SPAN_NAME",
    "TASK_ATTRIBUTE",
    "VllmSpanHandler",
    "normalize_request_id",
    "phase_events",
]

SPAN_NAME = "llm_request"
# The attribute names this handler reads (pinned by a contract test against the installed vLLM).
SPAN_ATTRIBUTES = {
    "request_id": "gen_ai.request.id",
    "prompt_tokens": "gen_ai.usage.prompt_tokens",
    "completion_tokens": "gen_ai.usage.completion_tokens",
    "queue_s": "gen_ai.latency.time_in_queue",
    "ttft_s": "gen_ai.latency.time_to_first_token",
    "e2e_s": "gen_ai.latency.e2e",
    "prefill_s": "gen_ai.latency.time_in_model_prefill",
    "decode_s": "gen_ai.latency.time_in_model_decode",
    "inference_s": "gen_ai.latency.time_in_model_inference",
}
_PREFIXES = ("chatcmpl-", "cmpl-")
_MAX_REMEMBERED = 50_000
_V = TypeVar("_V")


def normalize_request_id(raw: str) -> str:
    """vLLM's request id -> the id the client sent.

    Chat: ``chatcmpl-<id>`` -> ``<id>``. Completions: vLLM names prompt ``i`` of a
    request ``cmpl-<id>-<i>``; the first (the only one, usually) becomes ``<id>``,
    the others ``<id>-<i>``.
    """
    for prefix in _PREFIXES:
        if raw.startswith(prefix) and len(raw) > len(prefix):
            rest = raw[len(prefix) :]
            if prefix == "cmpl-" and rest.endswith("-0") and len(rest) > 2:
                rest = rest[:-2]
            return rest
    return raw


def phase_events(
    request_id: str,
    end_s: float,
    prompt_tokens: int,
    completion_tokens: int,
    prefill_s: float,
    decode_s: float,
    clock: StepClock | None = None,
    *,
    observe: bool = True,
) -> list[WorkEvent]:
    """Whole-phase work of one request that ended at ``end_s`` (sidecar clock, s).

    Prefill: all prompt tokens as one step, causal attention ``p(p+1)/2`` query-key
    pairs. Decode: ``n = completion - 1`` tokens (the first came from prefill), one
    step each, reading KV lengths ``p+1 .. p+n``; with a ``clock`` (the engine's
    shared step rate, :mod:`.step_clock`) the tokens follow the step rate over the
    window instead of spreading evenly (``observe``: add the window to the clock first;
    false when it already has it).
    """
    prefill_s, decode_s = max(prefill_s, 0.0), max(decode_s, 0.0)
    decode_t0 = end_s - decode_s
    out = []
    if prompt_tokens > 0:
        pairs = prompt_tokens * (prompt_tokens + 1) / 2
        out.append(
            WorkEvent(request_id, decode_t0 - prefill_s, decode_t0, Phase.PREFILL, prompt_tokens, 1.0, pairs)
        )
    n = completion_tokens - 1
    if n <= 0:
        return out
    if clock is None:
        ctx = n * prompt_tokens + n * (n + 1) / 2
        out.append(WorkEvent(request_id, decode_t0, end_s, Phase.DECODE, float(n), float(n), ctx))
        return out
    if observe:
        clock.observe(decode_t0, end_s, float(n))
    done = 0.0
    for a_s, b_s, share in clock.segments(decode_t0, end_s):
        k = n * share
        ctx = k * prompt_tokens + ((done + k) * (done + k + 1) - done * (done + 1)) / 2
        out.append(WorkEvent(request_id, a_s, b_s, Phase.DECODE, k, k, ctx))
        done += k
    return out


_ID, _PROMPT, _COMPLETION, _E2E, _PREFILL, _DECODE = (
    SPAN_ATTRIBUTES[k]
    for k in ("request_id", "prompt_tokens", "completion_tokens", "e2e_s", "prefill_s", "decode_s")
)


def _tokens(attrs: dict[str, AttrValue], name: str) -> int:
    return v.tokens(attrs[name], name) if name in attrs else 0


def _seconds(attrs: dict[str, AttrValue], name: str) -> float:
    return v.duration_s(attrs[name], name) if name in attrs else 0.0


class _Late(NamedTuple):
    """A handled request span kept for a client span of its trace to add the task: a tuple, not its
    RequestInfo (whose attributes dict alone was ~200 of its ~550 bytes; up to _MAX_REMEMBERED kept)."""

    request_id: str
    raw_id: str
    model: str
    start_s: float
    end_s: float
    prompt_tokens: int
    output_tokens: int

    def info(self, trace_id: str, task: str) -> RequestInfo:
        return RequestInfo(
            self.request_id,
            model=self.model,
            operation="chat" if self.raw_id.startswith("chatcmpl-") else "text_completion",
            task=task,
            start_s=self.start_s,
            end_s=self.end_s,
            prompt_tokens=self.prompt_tokens,
            output_tokens=self.output_tokens,
            attributes={"vllm.request_id": self.raw_id, "trace_id": trace_id},
        )


class VllmSpanHandler:
    """A :class:`~sidecar.taps.spans.SpanHandler` for vLLM's ``llm_request`` spans and client spans."""

    def __init__(
        self,
        to_mono: Callable[[float], float],
        *,
        model: Callable[[], str] = lambda: "unknown",
        claims: Callable[[str], bool] = lambda request_id: False,
        on_span: Callable[[str, ReceivedSpan], None] | None = None,
    ) -> None:
        self.to_mono = to_mono
        self.model = model
        self.claims = claims
        self.on_span = on_span
        self.clock = StepClock()  # the engine's step rate, from every span's decode window
        self._task_by_trace: OrderedDict[str, str] = OrderedDict()
        self._info_by_trace: OrderedDict[str, _Late] = OrderedDict()  # requests awaiting a task
        self._handled: OrderedDict[str, None] = OrderedDict()  # request ids seen, to refuse duplicates
        self._work: list[tuple[str, float, int, int, float, float]] = []  # spans' work until flush()
        self.requests = 0  # llm_request spans handled
        self.work_from_spans = 0  # of which the span supplied the work
        self.tasks_joined = 0

    def handle(self, span: ReceivedSpan, out: TapOutput) -> bool:
        if span.name == SPAN_NAME and _ID in span.attributes:
            self._request(span, out)
            return True
        task = span.attributes.get(TASK_ATTRIBUTE)
        if isinstance(task, str):
            self._client(span.trace_id, task, out)
            return True
        return False

    def stats(self) -> TapReport:
        """``llm_request`` spans handled, those that supplied the work, client tasks joined."""
        counts = {
            "requests": self.requests,
            "work_from_spans": self.work_from_spans,
            "tasks_joined": self.tasks_joined,
        }
        return TapReport(events={("vllm_spans", k): n for k, n in counts.items()})

    def _request(self, span: ReceivedSpan, out: TapOutput) -> None:
        attrs = span.attributes
        raw_id = v.request_id(attrs[_ID], _ID)
        request_id = normalize_request_id(raw_id)  # a non-empty part of a checked id: checked too
        if request_id in self._handled:
            raise v.Rejected("duplicate", f"llm_request span for {request_id!r} already handled")
        prompt, completion = _tokens(attrs, _PROMPT), _tokens(attrs, _COMPLETION)
        e2e_s, prefill_s, decode_s = (
            _seconds(attrs, _E2E),
            _seconds(attrs, _PREFILL),
            _seconds(attrs, _DECODE),
        )
        start_s = self.to_mono(span.start_unix_s)
        end_s = start_s + e2e_s if e2e_s > 0 else self.to_mono(span.end_unix_s)
        self._remember(self._handled, request_id, None)
        late = _Late(request_id, raw_id, self.model(), start_s, end_s, prompt, completion)
        info = late.info(span.trace_id, self._task_by_trace.get(span.trace_id, "unknown"))
        if info.task != "unknown":
            self.tasks_joined += 1
        self.requests += 1
        out.infos.append(info)
        if info.task == "unknown":  # only these can be joined by a later client span
            self._remember(self._info_by_trace, span.trace_id, late)
        if self.on_span is not None:
            self.on_span(request_id, span)
        if not self.claims(request_id):  # last: only a span handled whole leaves work for flush()
            self.work_from_spans += 1
            self._work.append((request_id, end_s, prompt, completion, prefill_s, decode_s))

    def flush(self, out: TapOutput) -> None:
        """The work of the spans handled since the last flush, cut on a step clock fitted once to all
        their windows (the receiver calls this after each drain; one fit per drain, not per span)."""
        work, self._work = self._work, []
        for _, end_s, _, completion, _, decode_s in work:
            if completion > 1:
                self.clock.observe(end_s - max(decode_s, 0.0), end_s, float(completion - 1))
        self.clock.fit()
        for request_id, end_s, prompt, completion, prefill_s, decode_s in work:
            out.events.extend(
                phase_events(
                    request_id, end_s, prompt, completion, prefill_s, decode_s, self.clock, observe=False
                )
            )

    def _client(self, trace_id: str, task: str, out: TapOutput) -> None:
        self._remember(self._task_by_trace, trace_id, task)
        late = self._info_by_trace.pop(trace_id, None)
        if late is not None:  # the request span came first, without a task
            self.tasks_joined += 1
            out.infos.append(late.info(trace_id, task))

    @staticmethod
    def _remember(table: OrderedDict[str, _V], key: str, value: _V) -> None:
        table[key] = value
        if len(table) > _MAX_REMEMBERED:
            table.popitem(last=False)  # one in, at most one out
