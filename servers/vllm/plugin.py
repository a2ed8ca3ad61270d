"""jouletrace's vLLM stat-logger plugin: one UDP datagram per engine iteration to the sidecar.

Registered under the entry point group ``vllm.stat_logger_plugins`` (see
pyproject.toml); vLLM's ``AsyncLLM`` loads it in the API-server process and
calls :meth:`JouletraceStatLogger.record` after every batch of engine outputs.

What it sends (format: :mod:`sidecar.contracts.vllm_wire`): the iteration's token
counts and the scheduler's running/waiting/KV usage (``IterationStats`` and
``SchedulerStats``), the requests that finished with their timings
(``IterationStats.finished_requests``: id, token counts, queue/prefill/decode
times), and the requests whose prefill finished in this iteration. The last
is not in ``IterationStats`` (it only counts them); the plugin reads it from
the output processor's request states, found once by walking up from
``record()`` to vLLM's output-handler loop. If that lookup fails (another vLLM
layout) the plugin still sends everything else and says ``live: false``; the
sidecar then builds work from the finished requests' timings.

Never blocks, never raises into vLLM: a non-blocking socket, one ``sendto`` per
datagram, any error is dropped and counted. Stdlib only (plus vLLM's own base
class), so it is cheap inside vLLM. Where to send: ``JOULETRACE_PLUGIN_HOST``
(default 127.0.0.1) and ``JOULETRACE_PLUGIN_PORT`` (default 9466).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from types import FrameType
from typing import Any

from vllm.logger import init_logger
from vllm.v1.metrics.loggers import StatLoggerBase

from servers.vllm.udp_addr import numeric
from sidecar.contracts.ports import PLUGIN_PORT as DEFAULT_PORT
from sidecar.contracts.vllm_wire import VERSION, encode

__all__ = ["JouletraceStatLogger"]

log: logging.Logger = init_logger("vllm.plugins.jouletrace")  # under "vllm": shows in its log

_HEARTBEAT_S = 1.0  # scheduler-only messages (and sweeps for aborted requests) at most this often
_MAX_GONE = 500  # aborted ids per message; beyond that they are dropped (bounded datagrams)


def _open(host: str) -> tuple[socket.socket | None, tuple[str, int]]:
    """The plugin's socket and the sidecar's address resolved once (a host name was looked up on
    every datagram, in vLLM's loop); no socket where the port is 0 (the sidecar's knob: no plugin
    port) or the address or socket cannot be had. vLLM builds its stat loggers with no guard: an
    error raised here stopped vLLM from starting."""
    try:
        port = int(os.environ.get("JOULETRACE_PLUGIN_PORT", str(DEFAULT_PORT)))
        if port == 0:
            log.info("jouletrace plugin off (JOULETRACE_PLUGIN_PORT=0)")
            return None, ("", 0)
        addr = numeric(host, port)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        return sock, addr
    except (OSError, ValueError):
        log.warning("jouletrace plugin disabled (JOULETRACE_PLUGIN_HOST/PORT)", exc_info=True)
        return None, ("", 0)


class JouletraceStatLogger(StatLoggerBase):  # type: ignore[misc]  # vLLM is untyped here
    """Streams per-iteration stats to the jouletrace sidecar over UDP."""

    def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
        self.engine_index = engine_index
        model_config = getattr(vllm_config, "model_config", None)
        served = getattr(model_config, "served_model_name", None) or getattr(model_config, "model", "")
        self.model = str(served[0] if isinstance(served, (list, tuple)) else served)
        # None: the plugin is off (vLLM serves as without it)
        self.sock, self.addr = _open(os.environ.get("JOULETRACE_PLUGIN_HOST", "127.0.0.1"))
        self.pid = os.getpid()
        self.seq = 0
        self.sent = 0
        self.dropped = 0
        self._last_send = 0.0
        self._frame: FrameType | None = None  # vLLM's output-handler loop
        self._frame_searched = False
        self._started: dict[str, str] = {}  # external -> internal id, first token reported
        self._last_sweep = 0.0

    # ---- StatLoggerBase -------------------------------------------------------------------
    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        if self.sock is None:
            return
        try:
            self._record(scheduler_stats, iteration_stats)
        except Exception:  # never into vLLM's loop
            self.dropped += 1

    def log_engine_initialized(self) -> None:
        if self.sock is not None:
            log.info("jouletrace plugin: per-iteration stats to udp://%s:%d", *self.addr)

    def log(self) -> None:
        if self.dropped:
            log.debug("jouletrace plugin: %d sent, %d dropped", self.sent, self.dropped)

    # ---- internals ------------------------------------------------------------------------
    def _record(self, sched: Any, it: Any) -> None:
        mono = time.monotonic()
        if it is None and mono - self._last_send < _HEARTBEAT_S:
            return
        if not self._frame_searched:
            self._frame = _find_output_loop(sys._getframe(2))
            self._frame_searched = True
        msg: dict[str, Any] = {
            "v": VERSION,
            "pid": self.pid,
            "seq": self.seq,
            "wall": time.time(),
            "model": self.model,
            "live": self._frame is not None,
        }
        if sched is not None:
            msg["sched"] = [sched.num_running_reqs, sched.num_waiting_reqs, round(sched.kv_cache_usage, 5)]
        if it is not None:
            end_ago, starts = self._live(it, mono)
            pts = it.prompt_token_stats
            msg["it"] = [
                round(end_ago, 6),
                it.num_generation_tokens,
                pts.computed,
                pts.cached_tokens,
                it.num_preempted_reqs,
            ]
            msg["start"] = starts
            for f in it.finished_requests:
                self._started.pop(f.request_id, None)
            if self._frame is not None and mono - self._last_sweep >= _HEARTBEAT_S:
                msg["gone"] = self._sweep()
                self._last_sweep = mono
            msg["fin"] = [
                [
                    f.request_id,
                    f.num_prompt_tokens,
                    f.num_generation_tokens,
                    round(f.queued_time, 6),
                    round(f.prefill_time, 6),
                    round(f.decode_time, 6),
                    round(f.e2e_latency, 6),
                    str(getattr(f.finish_reason, "name", f.finish_reason)).lower(),
                ]
                for f in it.finished_requests
            ]
        self.seq += 1
        self._last_send = mono
        for data in encode(msg):
            try:
                self.sock.sendto(data, self.addr)  # type: ignore[union-attr]  # (record() checked it)
                self.sent += 1
            except OSError:  # sidecar away (ECONNREFUSED), buffer full (EAGAIN): drop
                self.dropped += 1

    def _live(self, it: Any, mono: float) -> tuple[float, list[list[Any]]]:
        """(seconds since the engine step ended, requests whose first token came in it)."""
        frame = self._frame
        if frame is None:
            return 0.0, []
        local = frame.f_locals
        outputs = local.get("outputs")
        step_ts = getattr(outputs, "timestamp", None)
        end_ago = max(mono - step_ts, 0.0) if isinstance(step_ts, float) else 0.0
        if not it.time_to_first_tokens_iter:  # no prefill finished: nothing to scan
            return end_ago, []
        states = local["output_processor"].request_states
        starts: list[list[Any]] = []
        for internal_id, state in _stepped(outputs, states):
            st = state.stats
            if st is None or st.first_token_ts <= 0.0 or state.external_req_id in self._started:
                continue
            self._started[state.external_req_id] = internal_id
            cached = int(getattr(state, "num_cached_tokens", 0) or 0)
            starts.append(
                [
                    state.external_req_id,
                    state.prompt_len,
                    max(state.prompt_len - cached, 0),
                    round(max(st.first_token_ts - st.scheduled_ts, 0.0), 6),
                ]
            )
        return end_ago, starts

    def _sweep(self) -> list[str]:
        """External ids of started requests that left vLLM without finishing (aborted)."""
        assert self._frame is not None
        states = self._frame.f_locals["output_processor"].request_states
        gone = [ext for ext, internal in self._started.items() if internal not in states]
        for ext in gone:
            del self._started[ext]
        return gone[:_MAX_GONE]


def _stepped(outputs: Any, states: dict[str, Any]) -> list[tuple[str, Any]]:
    """The requests of this step's outputs (a first token comes in its step's output), by their
    state; every request's state where the outputs cannot be read so. Walking every state each
    step with a prefill cost vLLM's output loop time in proportion to its queue."""
    listed = getattr(outputs, "outputs", None)
    if not isinstance(listed, list):
        return list(states.items())
    ids = [getattr(o, "request_id", None) for o in listed]
    return [(rid, states[rid]) for rid in ids if isinstance(rid, str) and rid in states]


def _find_output_loop(frame: FrameType | None, depth: int = 8) -> FrameType | None:
    """The frame of vLLM's output-handler loop (it has ``output_processor`` and ``outputs``)."""
    while frame is not None and depth > 0:
        local = frame.f_locals
        if "output_processor" in local and hasattr(local["output_processor"], "request_states"):
            return frame
        frame = frame.f_back
        depth -= 1
    return None
