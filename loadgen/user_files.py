"""Users' files read as hostile: UTF-8 text and strict JSON, every failure an :class:`InputError`
naming the file (and the line where it is known), never a traceback.

Strict JSON: ``NaN`` and ``Infinity`` are not JSON (``results.json`` is written without them);
an integer of more than 4,300 digits or nesting deeper than Python's recursion limit is refused
too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadgen.errors import InputError, where

__all__ = ["loads", "read_text"]


class _NotJson(ValueError):
    """A constant json accepts but JSON has not (NaN, Infinity, -Infinity)."""


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


def read_text(path: Path, what: str) -> str:
    """The file's UTF-8 text; ``what`` names the kind of file in errors (``"dataset file"``)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise InputError(f"{path}: {what} not found") from err
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise InputError(f"{where(str(path), line, None)}: not UTF-8 text (byte {err.start})") from err
    except OSError as err:  # a folder, no permission
        raise InputError(f"{path}: cannot read the {what} ({err.strerror or err})") from err


def loads(text: str, path: str, line: int | None = None) -> Any:
    """Strict JSON; errors name ``path`` and ``line`` (the line of ``text`` in the file: given for
    one line of a JSONL file, else the parser's)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        at = where(path, line or err.lineno, None)
        raise InputError(f"{at}: not valid JSON ({err.msg} at column {err.colno})") from err
    except RecursionError as err:
        raise InputError(f"{where(path, line, None)}: not valid JSON (nested too deeply)") from err
    except _NotJson as err:
        raise InputError(f"{where(path, line, None)}: not valid JSON ({err})") from err
    except ValueError as err:  # int('1' * 5000): "Exceeds the limit (4300 digits) ..."
        raise InputError(f"{where(path, line, None)}: not valid JSON ({str(err).partition(':')[0]})") from err
