"""JSON in and out of the proxy: orjson to read, a member added by splicing, never a re-encode.

Reading: orjson reads 3-10x faster than :mod:`json` (already a dependency: the
ledger, the scheduler hook). It is stricter (UTF-8 only, no ``NaN``, no lone
surrogates), so what only :mod:`json` accepts is read by it: what the proxy learns
from is what it was with :mod:`json` alone. :func:`read` says which one read it.

Writing: the proxy adds one member to an object (``stream_options`` to a request
the client sent, ``energy`` to a usage chunk or a JSON answer). :func:`with_member`
splices ``"name":value`` before the object's closing brace, so every other byte is
the sender's: no re-encode per request, and nothing a re-encode could change (orjson
reads an integer over 64 bits as a float; :mod:`json` writes ``NaN``, which is not
JSON). The splice is right for any object orjson read (UTF-8, RFC 8259) that has no
member of that name (the caller checks both); otherwise the caller re-encodes.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "loads_exact", "read", "set_member", "with_member"]

_WS = b" \t\r\n"  # JSON's whitespace


def read(data: bytes | str) -> tuple[Any, bool]:
    """``(value, True)`` if orjson reads ``data`` (RFC 8259 JSON in UTF-8), else
    ``(json.loads(data), False)``; ``ValueError`` (UnicodeDecodeError included) if neither does,
    nested too deep for :mod:`json` included (hostile input: no RecursionError escapes)."""
    try:
        return orjson.loads(data), True
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data), False
    except RecursionError as err:
        raise ValueError("JSON nested too deep") from err


def loads_exact(data: bytes) -> Any:
    """``data`` read by :mod:`json` (every integer an int), for a document to re-encode; a document
    orjson read (at most 1024 deep) may still be too deep for :mod:`json`: ``ValueError`` then."""
    try:
        return json.loads(data)
    except RecursionError as err:
        raise ValueError("JSON nested too deep") from err


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON (:mod:`json`'s spelling, for a document only it could read);
    ``ValueError`` if it is nested too deep for :mod:`json` to write here."""
    try:
        return json.dumps(value, separators=(",", ":")).encode()
    except RecursionError as err:
        raise ValueError("JSON nested too deep") from err


def with_member(obj: bytes, name: str, value: Any) -> bytes:
    """The JSON object ``obj`` with ``"name":value`` added as its last member (orjson encodes
    ``value``). ``obj`` must be an object orjson read that has no member ``name``."""
    inner = obj.rstrip(_WS)
    if inner[-1:] != b"}":
        raise ValueError("not a JSON object")
    inner = inner[:-1].rstrip(_WS)
    comma = b"" if inner[-1:] == b"{" else b","  # a value never ends in "{": only an empty object does
    return inner + comma + orjson.dumps(name) + b":" + orjson.dumps(value) + b"}"


def set_member(
    raw: bytes, doc: dict[str, Any], strict: bool, name: str, value: Any, *, splice: bool = True
) -> bytes:
    """The object ``raw`` (read as ``doc``; by orjson if ``strict``) with ``name`` set to ``value``:
    spliced (:func:`with_member`) where orjson read it, it has no ``name`` and the caller allows
    (``splice``); else re-encoded, from ``raw`` read again by :mod:`json` where orjson read it
    (orjson reads an integer over 64 bits as a float), from ``doc`` where only :mod:`json` could.
    ``ValueError`` where the document is nested too deep for :mod:`json` to read or write it here
    (hostile input: no RecursionError escapes)."""
    if strict and splice and name not in doc:
        return with_member(raw, name, value)
    exact = loads_exact(raw) if strict else doc
    exact[name] = value
    return dumps(exact)
