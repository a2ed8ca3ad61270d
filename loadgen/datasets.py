"""Users' own datasets: JSONL, one request per line, replayed in file order (cycled to fill a run).

Schema of one line (a JSON object; unknown keys are an error, so typos surface)::

    {"task": "lm-arena-chat",          # optional; if given it must match the mix entry's task
     "messages": [{"role": "user", "content": "..."}],   # chat tasks (content may be a list of
                                       #   OpenAI parts: text, image_url, video_url)
     "prompt": "...",                  # completions; for chat: one user message; for diffusion: the prompt
     "prefix": "...", "suffix": "...", # code completion: wrapped in the FIM template
     "max_tokens": 256,                # output cap (tokens); default: drawn from the task's distribution
     "size": "1024x1024", "steps": 20, "num_frames": 49, "fps": 8, "seed": 7,   # diffusion overrides
     "id": "conv-17-turn-2"}           # your own id (1-200 printable characters), kept in the
                                       #   per-request CSV's dataset_id column (rows cycle, so
                                       #   requests keep their own unique ids)

Exported public datasets map directly: a conversation turn's history is ``messages``,
a FIM sample is ``prefix``/``suffix``. Errors name the file, line and field:
``chats.jsonl:12: field 'messages': expected a list of {role, content}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from loadgen.errors import InputError, where
from loadgen.factories import FactoryOptions, base_body, diffusion_body
from loadgen.records import Request
from loadgen.tasks import TaskSpec
from loadgen.user_files import loads, read_text

__all__ = ["KEYS", "load_rows", "requests_from_rows"]

KEYS = {
    "task",
    "messages",
    "prompt",
    "prefix",
    "suffix",
    "max_tokens",
    "size",
    "steps",
    "num_frames",
    "fps",
    "seed",
    "id",
}
_INT_KEYS = ("max_tokens", "steps", "num_frames", "fps", "seed")
MAX_ID_CHARS = 200  # a row's own id: printable, at most this long (it is a cell of requests.csv)


def _check_row(path: str, line: int, row: object, spec: TaskSpec) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise InputError(f"{where(path, line, None)}: expected a JSON object")
    for key in row:
        if key not in KEYS:
            raise InputError(f"{where(path, line, key)}: unknown field; allowed: {', '.join(sorted(KEYS))}")
    if "task" in row and row["task"] != spec.id:
        raise InputError(
            f"{where(path, line, 'task')}: {row['task']!r} but the mix uses this file for {spec.id!r}"
        )
    for key in _INT_KEYS:
        if key in row and (isinstance(row[key], bool) or not isinstance(row[key], int) or row[key] < 0):
            raise InputError(f"{where(path, line, key)}: expected a non-negative integer, got {row[key]!r}")
    if "messages" in row:
        msgs = row["messages"]
        if (
            not isinstance(msgs, list)
            or not msgs
            or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in msgs
            )
        ):
            raise InputError(
                f"{where(path, line, 'messages')}: expected a non-empty list of {{role, content}}"
            )
    for key in ("prompt", "prefix", "suffix", "size", "id"):
        if key in row and not isinstance(row[key], str):
            raise InputError(f"{where(path, line, key)}: expected a string, got {type(row[key]).__name__}")
    if "id" in row and not (0 < len(row["id"]) <= MAX_ID_CHARS and row["id"].isprintable()):
        raise InputError(
            f"{where(path, line, 'id')}: expected 1 to {MAX_ID_CHARS} printable characters, "
            f"got {row['id'][:40]!r}"
        )
    if "size" in row:
        w, _, h = row["size"].partition("x")
        if not (w.isdigit() and h.isdigit()):
            raise InputError(f"{where(path, line, 'size')}: expected WIDTHxHEIGHT, got {row['size']!r}")
    if spec.api == "chat" and "messages" not in row and "prompt" not in row:
        raise InputError(
            f"{where(path, line, 'messages')}: missing (a chat task needs 'messages' or 'prompt')"
        )
    if spec.api == "completions" and "prompt" not in row and "prefix" not in row:
        raise InputError(
            f"{where(path, line, 'prefix')}: missing (code completion needs 'prefix' or 'prompt')"
        )
    if spec.diffusion and "prompt" not in row:
        raise InputError(f"{where(path, line, 'prompt')}: missing")
    return row


def load_rows(path: str | Path, spec: TaskSpec) -> list[tuple[int, dict[str, Any]]]:
    """Validated ``(line, row)`` pairs of a JSONL dataset for ``spec`` (blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: dataset file not found")
    rows: list[tuple[int, dict[str, Any]]] = []
    for line_no, line in enumerate(read_text(p, "dataset file").split("\n"), start=1):
        if line.strip():
            rows.append((line_no, _check_row(str(p), line_no, loads(line, str(p), line_no), spec)))
    if not rows:
        raise InputError(f"{p}: dataset has no rows")
    return rows


def requests_from_rows(
    rows: list[tuple[int, dict[str, Any]]],
    spec: TaskSpec,
    n: int,
    rng: np.random.Generator,
    opts: FactoryOptions,
    id_prefix: str,
    start: int = 0,
) -> list[Request]:
    """``n`` requests from dataset rows in order (cycled); missing ``max_tokens`` are drawn."""
    out: list[Request] = []
    for k in range(n):
        _line, row = rows[k % len(rows)]
        rid = f"{id_prefix}-{start + k:06d}"
        own_id = row.get("id", "")
        if spec.diffusion:
            body = diffusion_body(spec, row["prompt"], opts, rng, row)
            out.append(
                Request(
                    id=rid, task=spec.id, api=spec.api, path=spec.path, body=body, unit=spec.unit, units=1.0,
                    dataset_id=own_id,
                )
            )  # fmt: skip
            continue
        assert spec.output is not None
        max_tokens = int(row["max_tokens"]) if "max_tokens" in row else int(spec.output.sample(rng, 1)[0])
        if opts.max_model_len is not None:
            max_tokens = max(1, min(max_tokens, opts.max_model_len // 2))
        body = base_body(spec.api, opts, max_tokens)
        if spec.api == "completions":
            prompt = row.get("prompt") or opts.fim_template.format(
                prefix=row.get("prefix", ""), suffix=row.get("suffix", "")
            )
            body["prompt"] = prompt
        else:
            body["messages"] = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
        out.append(
            Request(
                id=rid,
                task=spec.id,
                api=spec.api,
                path=spec.path,
                body=body,
                unit="token",
                target_output_tokens=max_tokens,
                dataset_id=own_id,
            )
        )
    return out
