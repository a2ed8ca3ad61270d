"""What flows through a run: a :class:`Request` to send and the :class:`Result` it produced.

Times in a result are seconds on the loadgen's monotonic clock (``time.perf_counter``)
measured from the run's start (``t0``); ``unix_s`` values are wall-clock seconds.
Energies are joules, straight from the sidecar's ``GET /v1/requests/{id}`` record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PromptSlot", "Request", "Result", "finite_j"]


@dataclass(slots=True)
class PromptSlot:
    """The part of a prompt the length fitter may grow or trim, and how to write it back.

    ``render(words)`` rewrites the request's body with ``words`` in the slot.
    """

    words: list[str]
    render: Callable[[list[str]], None]
    code: bool = False
    min_words: int = 1  # fewer words than this cannot shorten the prompt (one per part)


@dataclass(slots=True)
class Request:
    """One request to send: its id (sent as ``X-Request-Id``), task, API path and JSON body.

    ``target_output_tokens`` is the length drawn from the task's distribution and
    sent as ``max_tokens`` (``None`` for diffusion); ``units`` is what a success
    yields in the task's unit (images for ``n`` images, 1 video).
    """

    id: str
    task: str
    api: str  # chat, completions, images, videos
    path: str
    body: dict[str, Any]
    unit: str = "token"
    target_output_tokens: int | None = None
    target_prompt_tokens: int | None = None
    units: float = 0.0  # expected output units for diffusion (images / videos)
    phase: str = ""  # which phase of the run it belongs to
    slot: PromptSlot | None = None  # where the prompt-length fitter may add or trim words
    dataset_id: str = ""  # the dataset row's own "id" (loadgen.datasets), for requests.csv


@dataclass(slots=True)
class Result:
    """What happened to one request (client side), plus its sidecar energy record.

    ``chunk_s`` are the arrival times of the streamed chunks that carried text, and
    ``chunk_tokens`` how many tokens each carried (1 each unless the server batched
    them; rescaled so they sum to ``output_tokens`` when the server reports usage).
    """

    request: Request
    target_s: float  # when the arrival process wanted it sent
    sent_s: float = 0.0  # when the HTTP request was handed to the connection
    first_token_s: float | None = None
    finished_s: float | None = None
    chunk_s: list[float] = field(default_factory=list)
    chunk_tokens: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int | None = None
    output_units: float = 0.0  # tokens / images / videos produced
    status: int | None = None
    error: str | None = None
    response_id: str | None = None
    trace_id: str | None = None
    finish_reason: str | None = None
    energy: dict[str, Any] | None = None  # the sidecar's record, as JSON
    energy_note: str | None = None  # why there is no (final) record
    retries: int = 0  # resent once after the server closed a kept-alive connection unanswered
    served_model: str | None = None  # the model the server says it used (diffusion responses)
    batch: dict[str, Any] | None = None  # diffusion: the server's batch (id, size, start/end_unix_s)

    @property
    def ok(self) -> bool:
        """True when the request finished without an error."""
        return self.error is None and self.finished_s is not None

    @property
    def ttft_s(self) -> float | None:
        """Time to first token (s), from send."""
        return None if self.first_token_s is None else self.first_token_s - self.sent_s

    @property
    def e2e_s(self) -> float | None:
        """End-to-end latency (s), from send to the last byte."""
        return None if self.finished_s is None else self.finished_s - self.sent_s

    @property
    def itl_s(self) -> list[float]:
        """Inter-token latencies (s): gaps between streamed chunks, per token in the later chunk."""
        out = []
        for i in range(1, len(self.chunk_s)):
            gap = self.chunk_s[i] - self.chunk_s[i - 1]
            n = max(1.0, self.chunk_tokens[i])
            out.append(gap / n)
        return out

    @property
    def arrival_error_s(self) -> float:
        """How late (s) the request left relative to its arrival-process time."""
        return self.sent_s - self.target_s

    @property
    def energy_j(self) -> float | None:
        """The sidecar's energy for this request (J), when it has a record."""
        if self.energy is None:
            return None
        return finite_j(self.energy.get("energy_j"))


def finite_j(value: Any) -> float | None:
    """An energy from the sidecar (J): a number >= 0 that is finite, else None (a sidecar's
    answer is read as hostile as a server's: NaN, Infinity, -50 or ``true`` is no energy)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        joules = float(value)
    except OverflowError:  # an integer past 1.8e308
        return None
    return joules if 0.0 <= joules < math.inf else None
