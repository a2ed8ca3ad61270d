"""The ways work reaches the attributor, for a simulated run: each a source for :mod:`sidecar.offline`.

``oracle`` hands over the simulator's own per-step events (a ceiling, not a
user path); ``hook``, ``plugin`` and ``spans`` feed the bytes the real senders would send
(:mod:`sidecar.sim.taps`) to the real receivers, exactly as the live sidecar's
taps get them.
"""

from __future__ import annotations

import numpy as np

from sidecar.attribution.events import StepBatch
from sidecar.offline import EventSource, PayloadSource, Source
from sidecar.sim.run import MODEL_NAME, SimRun, attention_work
from sidecar.sim.taps import UNIX_OFFSET_S, hook_datagrams, plugin_datagrams, span_exports, to_mono
from sidecar.taps.otlp import OtlpReceiver
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_hook import MAX_GAP_S, MIN_GAP_S, HookReceiver
from sidecar.taps.vllm_plugin import PluginReceiver
from sidecar.taps.vllm_spans import VllmSpanHandler

__all__ = ["PATHS", "source_for"]


PATHS = ("hook", "plugin", "spans", "oracle", "study-rule")


def source_for(run: SimRun, path: str) -> Source:
    """A fresh source delivering ``run``'s work the way ``path`` does."""
    if path == "oracle":
        return EventSource(_present(run), run.requests)

    def sim_now() -> float:  # the receivers date datagrams against "now": the replay's Unix time
        return UNIX_OFFSET_S + source.now_s

    if path == "hook":
        hook = HookReceiver(to_mono, default_model=MODEL_NAME, wall=sim_now)
        source = PayloadSource(hook.feed, hook_datagrams(run))
        return source
    if path == "plugin":
        receiver = PluginReceiver(to_mono, default_model=MODEL_NAME, wall=sim_now)
        source = PayloadSource(receiver.feed, plugin_datagrams(run))
        return source
    if path == "spans":
        handler = VllmSpanHandler(to_mono, model=lambda: MODEL_NAME, wall=sim_now)
        otlp = OtlpReceiver([handler], wall=sim_now)

        def feed(data: bytes, out: TapOutput) -> None:
            otlp.receive(data)  # as the gRPC method does: decode, check, queue
            events, infos = otlp.due(source.now_s)
            out.events += events
            out.infos += infos

        source = PayloadSource(feed, span_exports(run))
        return source
    raise ValueError(f"unknown path {path!r}; choose one of {', '.join(PATHS)}")


def _present(run: SimRun) -> list[StepBatch]:
    """The simulator's steps (timed, as the hook gives them), plus each step's members present (no
    work) in the CPU gap after it, over ``MIN_GAP_S`` and up to ``MAX_GAP_S``, as the hook receiver
    gives it."""
    out: list[StepBatch] = []
    prev: StepBatch | None = None
    for step in run.steps:
        ids = tuple(m.request_id for m in step.members)
        phase = np.array([int(m.phase) for m in step.members], dtype=np.int8)
        if prev is not None and MIN_GAP_S < step.t0_s - prev.t1_s <= MAX_GAP_S:
            zeros = np.zeros(len(prev.request_ids))
            out.append(StepBatch(prev.t1_s, step.t0_s, prev.request_ids, prev.phase, zeros, zeros, steps=0.0))
        units = np.array([float(m.tokens) for m in step.members])
        pairs = np.array([attention_work(m) for m in step.members])
        prev = StepBatch(step.t0_s, step.t1_s, ids, phase, units, pairs, timed=True)
        out.append(prev)
    return out
