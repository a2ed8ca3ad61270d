"""jouletrace's scheduler hook: vLLM's v1 scheduler, streaming every step's exact members.

Loaded by vLLM with ``--scheduler-cls servers.vllm.scheduler_hook.JouletraceScheduler``
(``jouletrace vllm serve`` passes it). It *is* vLLM's scheduler (a subclass that
changes no decision); around three of its methods it reads what the scheduler
already computed and hands it to :class:`servers.vllm.hook_stream.StepStream`:

* ``add_request()``: a parallel-sampling child (``<i>_<parent id>``) announced as it
  arrives, so the sidecar knows all of a request's children before one ends (under a
  full batch vLLM may run one child to its end before the next is first scheduled);
* ``schedule()``: the batch's members from ``SchedulerOutput`` - new requests
  (``scheduled_new_reqs[i].req_id`` / ``.num_computed_tokens``) and running or
  resumed ones (``scheduled_cached_reqs.req_ids`` / ``.num_computed_tokens``):
  the tokens already in the KV cache before the step (prefix-cache hits
  included) - and ``num_scheduled_tokens[req_id]``, exactly what the workers
  compute;
* ``update_from_output()``: the step's end, then the requests that left since
  (``finished_req_ids``; also read before each ``schedule()``, which clears it):
  ``FINISHED_ABORTED`` as ``gone``, others as ``fin`` with output tokens.

Async scheduling: vLLM on a GPU schedules the next batch while one runs
(``AsyncScheduler``). One flag serves both: :class:`JouletraceScheduler` becomes
:class:`JouletraceAsyncScheduler` when the config asks for async scheduling, so
the hook never changes how vLLM schedules.

Request ids: vLLM 0.32 appends ``-<8 hex>`` to the front end's id (unless
``VLLM_DISABLE_REQUEST_ID_RANDOMIZATION``); the hook strips it, so the sidecar
gets ``chatcmpl-<X-Request-Id>`` as the stat-logger plugin does.

Never raises into vLLM: every addition is in ``try``; failures are counted
(``errors``). Where: ``JOULETRACE_HOOK_HOST`` (default 127.0.0.1),
``JOULETRACE_HOOK_PORT`` (default :data:`sidecar.contracts.scheduler_wire.DEFAULT_PORT`).
``JOULETRACE_HOOK_LOG_S`` (default 60): seconds between log lines with the
hook's own cost per step on vLLM's loop (``perf_counter`` around its code in
``schedule()`` and ``update_from_output()``: wall time, so waits for the GIL or
a core count too; and ``time.thread_time``: its CPU time) and the steps' duration, over all
steps and over steps at the full batch (``max_num_seqs`` members).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from vllm.logger import init_logger
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import RequestStatus

from servers.vllm.hook_stream import StepStream
from servers.vllm.udp_addr import numeric
from sidecar.contracts.scheduler_wire import DEFAULT_PORT

__all__ = ["JouletraceAsyncScheduler", "JouletraceScheduler"]

log: logging.Logger = init_logger("vllm.plugins.jouletrace_hook")  # under "vllm": shows in its log


def _async_scheduling(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    config = kwargs.get("vllm_config", args[0] if args else None)
    return bool(getattr(getattr(config, "scheduler_config", None), "async_scheduling", False))


class JouletraceScheduler(Scheduler):  # type: ignore[misc]  # vLLM is untyped here
    """vLLM's scheduler plus the jouletrace step stream."""

    def __new__(cls, *args: Any, **kwargs: Any) -> JouletraceScheduler:
        if cls is JouletraceScheduler and _async_scheduling(args, kwargs):
            cls = JouletraceAsyncScheduler
        return super().__new__(cls)  # type: ignore[no-any-return]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._jt: StepStream | None = None
        self._jt_errors = 0
        self._jt_sched = (0.0, 0.0)  # the hook's wall and CPU time in the last schedule()
        # steps, hook s, step s: over all steps and over steps at the full batch (max_num_seqs members)
        # steps, hook wall s, step s, hook CPU s
        self._jt_cost = {"all": [0, 0.0, 0.0, 0.0], "full": [0, 0.0, 0.0, 0.0]}
        self._jt_log_s = float(os.environ.get("JOULETRACE_HOOK_LOG_S", "60"))
        self._jt_logged = time.monotonic()
        try:
            served = self.vllm_config.model_config.served_model_name
            model = str(served[0] if isinstance(served, (list, tuple)) else served)
            from vllm import envs

            self._jt = StepStream(
                model,
                numeric(os.environ.get("JOULETRACE_HOOK_HOST", "127.0.0.1"),
                        int(os.environ.get("JOULETRACE_HOOK_PORT", str(DEFAULT_PORT)))),
                randomized_ids=not envs.VLLM_DISABLE_REQUEST_ID_RANDOMIZATION,
            )  # fmt: skip
            log.info("jouletrace scheduler hook: every step to udp://%s:%d", *self._jt.addr)
        except Exception:  # never into vLLM: the scheduler works without the hook
            log.warning("jouletrace scheduler hook disabled", exc_info=True)

    def add_request(self, request: Any) -> None:
        super().add_request(request)
        jt = self._jt
        if jt is not None:
            try:
                jt.arrived(request.request_id, request)
            except Exception:
                self._jt_errors += 1

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        p0, q0 = time.perf_counter(), time.thread_time()
        t0 = time.monotonic()
        jt = self._jt
        if jt is not None:
            self._jt_finished(jt)
        c0, d0 = time.perf_counter(), time.thread_time()
        out = super().schedule(*args, **kwargs)
        c1, d1 = time.perf_counter(), time.thread_time()
        if jt is not None:
            try:
                new = out.scheduled_new_reqs
                cached = out.scheduled_cached_reqs
                members = [r.req_id for r in new] + cached.req_ids if new else list(cached.req_ids)
                before = [r.num_computed_tokens for r in new] + cached.num_computed_tokens
                scheduled = list(map(out.num_scheduled_tokens.__getitem__, members))
                jt.scheduled(out, t0, members, scheduled, before, self.requests.__getitem__)
            except Exception:
                self._jt_errors += 1
        self._jt_sched = ((c0 - p0) + (time.perf_counter() - c1), (d0 - q0) + (time.thread_time() - d1))
        return out

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        p0, q0 = time.perf_counter(), time.thread_time()
        t1 = time.monotonic()
        jt = self._jt
        step_s, members = 0.0, 0
        if jt is not None:
            try:
                step_s, members = jt.ended(scheduler_output, t1)
            except Exception:
                self._jt_errors += 1
        c0, d0 = time.perf_counter(), time.thread_time()
        result = super().update_from_output(scheduler_output, model_runner_output)
        c1, d1 = time.perf_counter(), time.thread_time()
        if jt is not None:
            self._jt_finished(jt)
            try:
                jt.maybe_flush(idle=not self.has_requests())
            except Exception:
                self._jt_errors += 1
            if t1 - self._jt_logged >= self._jt_log_s:
                self._jt_log(jt, t1)
        if members:  # one schedule() and one update_from_output() per step
            cost_s = self._jt_sched[0] + (c0 - p0) + (time.perf_counter() - c1)
            cpu_s = self._jt_sched[1] + (d0 - q0) + (time.thread_time() - d1)
            kinds = ("all", "full") if members >= self.scheduler_config.max_num_seqs else ("all",)
            for kind in kinds:
                acc = self._jt_cost[kind]
                acc[0] += 1
                acc[1] += cost_s
                acc[2] += step_s
                acc[3] += cpu_s
        return result

    def _jt_finished(self, jt: StepStream) -> None:
        """Report requests that left since the last look (``finished_req_ids``)."""
        try:
            for engine_id in self.finished_req_ids:
                req = jt.request(engine_id)
                if req is None:  # never scheduled, or already reported
                    continue
                reason = req.get_finished_reason()
                jt.finished(
                    engine_id,
                    req.num_output_tokens,
                    str(getattr(reason, "name", reason)).lower(),
                    aborted=req.status == RequestStatus.FINISHED_ABORTED,
                )
        except Exception:
            self._jt_errors += 1

    def _jt_log(self, jt: StepStream, now: float) -> None:
        """One line with the hook's counters and its own cost per step (``perf_counter`` around its code)."""
        parts = []
        for kind, (n, hook_s, step_s, cpu_s) in self._jt_cost.items():
            if n:
                label = "all" if kind == "all" else f"batch {self.scheduler_config.max_num_seqs}"
                parts.append(
                    f"{label}: {n} steps, hook us/step {1e6 * hook_s / n:.1f}, "
                    f"step ms {1e3 * step_s / n:.3f}, hook CPU us/step {1e6 * cpu_s / n:.1f}"
                )
        log.info(
            "jouletrace hook: %d sent, %d dropped, %d rows too big, %d errors | %s",
            jt.sent, jt.dropped, jt.too_big, self._jt_errors, " | ".join(parts),
        )  # fmt: skip
        self._jt_logged = now


class JouletraceAsyncScheduler(JouletraceScheduler, AsyncScheduler):  # type: ignore[misc]
    """The hook over vLLM's async scheduler (chosen by :class:`JouletraceScheduler` itself)."""
