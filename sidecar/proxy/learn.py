"""What the proxy learns about one request, validated at the edge.

Everything here comes from a client or an upstream we do not control, so every
field is checked before it is kept: ids, task and tenant are short printable
strings (else replaced or dropped, and counted); token counts are finite
integers in range (else ignored, and counted). A bad field never costs the
request: it is forwarded unchanged, only what we learn from it is dropped.

:func:`inspect_body` reads the request body once (model, stream flag, tenant
from the OpenAI ``user`` field) and decides whether to ask the upstream for a
usage chunk (``stream_options.include_usage``) that the client did not ask for.
:class:`RequestTrace` is the per-request record the forwarder fills in on the
proxy's thread and the tap reads on the sidecar's: arrival, each chunk's time,
end, usage.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

from sidecar.contracts.proxy_wire import COMPLETION_PATHS, MAX_CHUNKS_PER_REQUEST, TRACEPARENT
from sidecar.proxy import jsonio
from sidecar.recent_ids import RecentIds

__all__ = [
    "MAX_TOKENS",
    "BodyFacts",
    "Counts",
    "GivenIds",
    "RequestTrace",
    "clean_label",
    "inspect_body",
    "new_request_id",
    "usage_tokens",
]

MAX_TOKENS = 10_000_000  # per request; more is not a usage figure we believe
# request ids remembered once given (the sidecar refuses work for its last 100,000 final ids:
# a client's X-Request-Id used again would cost the second request its energy): a reuse gets a new id
IDS_KEPT = 100_000
_LABEL = re.compile(r"[A-Za-z0-9._:/@+=-]{1,128}")
_ASK_USAGE = {"include_usage": True}


class Counts:
    """Thread-safe counters by name: outcomes (streams, disconnected, ...) and rejected fields."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[what] += n

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def clean_label(value: object, what: str, rejections: Counts) -> str | None:
    """``value`` if it is a short printable id-like string; else None (counted when present)."""
    if value is None:
        return None
    if isinstance(value, str) and _LABEL.fullmatch(value):
        return value
    rejections.add(what)
    return None


def clean_traceparent(value: str | None, rejections: Counts) -> str | None:
    """A W3C ``traceparent`` if well formed (it is passed on either way; only learning needs it)."""
    if value is None:
        return None
    if TRACEPARENT.fullmatch(value.strip().lower()):
        return value.strip().lower()
    rejections.add("traceparent")
    return None


def new_request_id() -> str:
    """A request id for a request that came without a usable one: 128 random bits (an id, not a
    secret: Python's generator, seeded from the OS; a duplicate of a live id is caught by the sender)."""
    return f"jt-{random.getrandbits(128):032x}"


class GivenIds:
    """The ids given to the last :data:`IDS_KEPT` requests: a trace whose id is live, or was given
    already, gets a new one (:func:`new_request_id`; counted ``duplicate_request_id``)."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self._taken: RecentIds[str] = RecentIds(IDS_KEPT)

    def give(self, trace: RequestTrace, live: Container[str]) -> str:
        """The id ``trace`` goes by (set on it): its own, or a new one."""
        if trace.request_id in live or not self._taken.add_new(trace.request_id):
            self.counts.add("duplicate_request_id")
            trace.request_id = new_request_id()
            self._taken.add(trace.request_id)
        return trace.request_id


@dataclass(frozen=True, slots=True)
class BodyFacts:
    """What the request body says, and the body to send upstream."""

    body: bytes  # unchanged unless usage was asked for on the client's behalf
    model: str | None = None
    stream: bool = False
    user: str | None = None
    asked_usage: bool = False  # the proxy added stream_options.include_usage
    prompt_chars: int = 0  # characters of prompt text (an estimate's basis until usage arrives)


def _prompt_chars(doc: dict[str, Any]) -> int:
    total = 0
    prompt = doc.get("prompt")
    if isinstance(prompt, str):
        total += len(prompt)
    messages = doc.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                total += len(content)
            elif isinstance(content, list):
                total += sum(
                    len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
    return total


def inspect_body(path: str, body: bytes, rejections: Counts) -> BodyFacts:
    """Read a completions request body; anything else (or unparsable) is passed on as is.

    Asking for usage adds ``stream_options`` to the client's bytes
    (:func:`~sidecar.proxy.jsonio.with_member`) when it has none and orjson read the body;
    a body whose ``stream_options`` lacks ``include_usage`` (or one only :mod:`json` reads)
    is re-encoded."""
    if path not in COMPLETION_PATHS or not body:
        return BodyFacts(body)
    try:
        doc, strict = jsonio.read(body)
    except ValueError:  # UnicodeDecodeError included
        rejections.add("body")
        return BodyFacts(body)
    if not isinstance(doc, dict):
        rejections.add("body")
        return BodyFacts(body)
    model = clean_label(doc.get("model"), "model", rejections)
    user = clean_label(doc.get("user"), "user", rejections)
    stream = lax_bool(doc.get("stream"))
    facts = BodyFacts(body, model, stream, user, prompt_chars=_prompt_chars(doc))
    options = doc.get("stream_options")
    if not stream or (isinstance(options, dict) and lax_bool(options.get("include_usage"))):
        return facts
    if options is not None and not isinstance(options, dict):
        return facts  # the client's own malformed stream_options: the upstream answers it
    if strict and "stream_options" not in doc:
        new_body = jsonio.with_member(body, "stream_options", _ASK_USAGE)
    else:
        try:
            doc = jsonio.loads_exact(body) if strict else doc  # orjson reads an int over 64 bits as a float
            doc["stream_options"] = {**(doc.get("stream_options") or {}), "include_usage": True}
            new_body = jsonio.dumps(doc)
        except ValueError:  # nested deeper than json reads (orjson reads 1024 levels): as it came
            rejections.add("body")
            return facts
    return BodyFacts(new_body, model, stream, user, asked_usage=True, prompt_chars=facts.prompt_chars)


_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})


def lax_bool(value: object) -> bool:
    """True where an engine's pydantic model (lax mode, as vLLM's and SGLang's) reads ``value`` as
    true: ``true``, 1, 1.0, and the strings it takes for true ("true", "1", "yes", "on", ...). A
    ``"stream": "true"`` was read as not streamed: no usage asked for, and the work one prefill."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in _TRUE


def usage_tokens(usage: object, rejections: Counts) -> tuple[int, int] | None:
    """(prompt, completion) tokens of an OpenAI ``usage`` object, or None if it is not a sane one."""
    if not isinstance(usage, dict):
        rejections.add("usage")
        return None
    out: list[int] = []
    for key in ("prompt_tokens", "completion_tokens"):
        value = usage.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            rejections.add("usage")
            return None
        if not 0 <= value <= MAX_TOKENS or value != int(value):  # NaN fails; a huge int is no float
            rejections.add("usage")
            return None
        out.append(int(value))
    return out[0], out[1]


def _unheard(request_id: str) -> None:
    """A trace no book holds yet: nobody to tell."""


@dataclass(slots=True)
class RequestTrace:
    """One proxied completion: filled in by the forwarder, read by the tap.

    Times are the sidecar's monotonic seconds. ``chunk_s`` grows by append only
    (one writer), so the tap can read a prefix without a lock; the fields set at
    the end (``usage``, ``end_s``) are set before ``done`` is. The writer calls
    :meth:`changed` after it adds chunks, usage or the end: the book that holds the
    trace (:class:`~sidecar.proxy.book.TraceBook`) looks only at traces that changed.
    """

    request_id: str
    arrival_s: float
    path: str
    model: str | None = None
    stream: bool = False
    task: str | None = None
    tenant: str | None = None
    traceparent: str | None = None
    prompt_chars: int = 0
    chunk_s: list[float] = field(default_factory=list)  # times of content chunks (a token each)
    shared_s: float = 0.0  # wall seconds, each divided by the proxied requests then in flight
    shared_steps: float = 0.0  # chunks (engine steps), each divided likewise
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens from the upstream
    response_model: str | None = None
    status: int = 0
    answered: bool = False  # the client has had the response's headers
    outcome: str = "ok"  # ok, error, disconnected, upstream_down, upstream_broken
    end_s: float | None = None
    done: bool = False
    work_lost: bool = False  # the wire tap lost some of its chunks (a lost or refused row): energy unknown
    chunks_over: int = 0  # content chunks past MAX_CHUNKS_PER_REQUEST, not kept (work lost)
    over_s: float = 0.0  # when the last of them came
    notify: Callable[[str], None] = field(default=_unheard, compare=False, repr=False)  # set by its book

    def changed(self) -> None:
        """Tell the book this trace has something new (chunks, usage, its end): any thread."""
        self.notify(self.request_id)

    def add_chunk(self, now_s: float) -> None:
        """A content chunk at ``now_s``; past :data:`MAX_CHUNKS_PER_REQUEST` only counted (a stream
        that never ends must not grow the proxy without bound), and the trace's work is lost."""
        if len(self.chunk_s) < MAX_CHUNKS_PER_REQUEST:
            self.chunk_s.append(now_s)
            return
        self.chunks_over += 1
        self.over_s = now_s
        self.work_lost = True

    @property
    def first_token_s(self) -> float | None:
        return self.chunk_s[0] if self.chunk_s else None
