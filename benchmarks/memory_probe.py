"""Run the sidecar as ``python -m sidecar.cli`` does, and answer SIGUSR1 with where its memory is.

``benchmarks/memory.py --heap`` (or ``--tracemalloc N``) starts the sidecar through this module
instead of ``python -m sidecar.cli``; the sidecar itself is unchanged (same ``main``, same
arguments). On each SIGUSR1 the main thread (between two bytecodes, as Python runs signal
handlers) writes ``probe-K.json`` into the output directory:

* ``rss_mb``: VmRSS;
* ``malloc``: glibc ``mallinfo2()`` summed over all arenas: ``in_use_mb`` (malloc'd and not
  freed: CPython objects over 512 bytes, NumPy data, gRPC core, protobuf/upb arenas),
  ``free_mb`` (freed but kept in the heap: fragmentation glibc could not give back),
  ``mmap_mb`` (large chunks mapped on their own, part of ``in_use_mb``);
* ``pymalloc``: CPython's small-object allocator (``sys._debugmallocstats``): ``used_mb`` (bytes in
  allocated blocks), ``free_mb`` (free blocks in pools and arenas it holds), ``arenas_mb``;
* with tracemalloc on (``N`` frames): ``traced_mb`` (every live Python allocation),
  ``tracemalloc_mb`` (tracemalloc's own bookkeeping, part of the RSS only in this mode), and the
  top allocation sites of what is live, grouped two ways: by the innermost frame (``by_line``)
  and by the innermost frame in this repository's code (``by_repo_line``: which of our structures
  holds the memory, whatever library allocated it), each with the growth since the previous probe.

    python benchmarks/memory_probe.py OUT_DIR FRAMES sidecar [sidecar knobs...]

``FRAMES`` 0 leaves tracemalloc off (RSS as users see it, plus the heap figures).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
_REPO_CODE = tuple(str(REPO / d) + os.sep for d in ("sidecar", "servers", "loadgen"))
_ROOTS = (str(REPO) + os.sep, *(p + os.sep for p in sys.path if p.endswith("site-packages")))
_ARENA_MB = 1.0  # pymalloc arenas are 1 MiB on 64-bit CPython >= 3.10


class _MallInfo2(ctypes.Structure):
    _FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    _fields_ = [(name, ctypes.c_size_t) for name in (*_FIELDS, "keepcost")]


def malloc_stats() -> dict[str, float]:
    """glibc's heap, all arenas: in use (incl. mmapped chunks), free but retained, mmapped (MB)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {
        "in_use_mb": (info.uordblks + info.hblkhd) / MB,
        "free_mb": info.fordblks / MB,
        "mmap_mb": info.hblkhd / MB,
    }


def pymalloc_stats() -> dict[str, float]:
    """CPython's small-object allocator (its stats go to fd 2; read them back from a file)."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")

    def field(label: str) -> float:
        m = re.search(r"#\s*" + re.escape(label) + r"\s*=\s*([\d,]+)", text)
        return int(m.group(1).replace(",", "")) if m else float("nan")

    arenas_mb = field("arenas allocated current") * _ARENA_MB
    used_mb = field("bytes in allocated blocks") / MB
    return {"used_mb": used_mb, "free_mb": arenas_mb - used_mb, "arenas_mb": arenas_mb}


def _site(frame: tuple[str, int]) -> str:
    name, lineno = frame
    for root in _ROOTS:
        if name.startswith(root):
            return f"{name[len(root) :]}:{lineno}"
    return f"{name}:{lineno}"


def _repo_site(frames: tuple[tuple[str, int], ...]) -> str:
    """The innermost frame in this repository's code (not benchmarks/), else the innermost frame."""
    for frame in frames:  # most recent call first
        if frame[0].startswith(_REPO_CODE):
            return _site(frame)
    return "(outside the repo) " + _site(frames[0])


class Probe:
    """Answers each SIGUSR1 with ``probe-K.json`` (and ``probe-K.snapshot`` if tracing) in ``out``."""

    def __init__(self, out: Path) -> None:
        self.out, self.k = out, 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.k += 1
        result: dict[str, object] = {
            "rss_mb": _rss_mb(),
            "malloc": malloc_stats(),
            "pymalloc": pymalloc_stats(),
            "types": self._types(),
        }
        if tracemalloc.is_tracing():
            # dumped for the parent to group: a pickle allocates next to nothing per trace, where
            # grouping millions of traces here would allocate (and trace) as much again
            snap = tracemalloc.take_snapshot()
            result["traced_mb"] = tracemalloc.get_traced_memory()[0] / MB
            result["tracemalloc_mb"] = tracemalloc.get_tracemalloc_memory() / MB
            snap.dump(str(self.out / f"probe-{self.k}.snapshot"))
            del snap
        tmp = self.out / f".probe-{self.k}.json"
        tmp.write_text(json.dumps(result))
        tmp.rename(self.out / f"probe-{self.k}.json")

    @staticmethod
    def _types(top: int = 12) -> list[dict[str, Any]]:
        """The most memory-holding objects by type, with their shallow sizes: every object the
        garbage collector tracks (containers, instances) and every untracked one they refer to
        directly (str, bytes, int, float, NumPy arrays with their data): a few seconds."""
        n: Counter[str] = Counter()
        size: Counter[str] = Counter()
        seen: set[int] = set()
        for obj in gc.get_objects():
            name = type(obj).__qualname__
            n[name] += 1
            size[name] += sys.getsizeof(obj)
            for ref in gc.get_referents(obj):
                if gc.is_tracked(ref) or id(ref) in seen:
                    continue
                seen.add(id(ref))
                name = type(ref).__qualname__
                n[name] += 1
                size[name] += sys.getsizeof(ref)
        return [{"type": t, "count": n[t], "mb": mb / MB} for t, mb in size.most_common(top)]


class Sites:
    """The parent's side: groups a dumped snapshot's live allocations by site, with the growth
    since the previous one."""

    def __init__(self, top: int) -> None:
        self.top = top
        self._prev: dict[str, Counter[str]] = {}

    def group(self, path: Path) -> dict[str, list[dict[str, Any]]]:
        # the raw traces, (domain, size, frames most recent first, ...): a Trace object per allocation
        # would take minutes for a flood's millions of them
        raw_traces: list[tuple[Any, ...]] = tracemalloc.Snapshot.load(str(path)).traces._traces  # type: ignore[attr-defined]
        per_tb: dict[int, list[Any]] = {}  # equal tracebacks are one tuple: grouped on its id first
        for raw in raw_traces:
            entry = per_tb.get(id(raw[2]))
            if entry is None:
                per_tb[id(raw[2])] = [raw[1], 1, raw[2]]
            else:
                entry[0] += raw[1]
                entry[1] += 1
        sizes: dict[str, Counter[str]] = {"by_repo_line": Counter(), "by_line": Counter()}
        counts: dict[str, Counter[str]] = {"by_repo_line": Counter(), "by_line": Counter()}
        for size, n, frames in per_tb.values():
            for kind, key in (("by_line", _site(frames[0])), ("by_repo_line", _repo_site(frames))):
                sizes[kind][key] += size
                counts[kind][key] += n
        out = {
            kind: [
                {"site": site, "mb": size / MB, "blocks": counts[kind][site], "growth_mb": (size - prev) / MB}
                for site, size in by_site.most_common(self.top)
                for prev in (self._prev.get(kind, Counter())[site],)
            ]
            for kind, by_site in sizes.items()
        }
        self._prev = sizes
        return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ask(pid: int, out: Path, k: int, sites: Sites, timeout_s: float = 300.0) -> dict[str, Any]:
    """Signal the probed sidecar and wait for its ``k``-th answer (the parent's side); with its
    snapshot's top sites if it traces."""
    os.kill(pid, signal.SIGUSR1)
    path = out / f"probe-{k}.json"
    end = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"no {path.name} within {timeout_s:.0f} s")
        time.sleep(0.1)
    answer: dict[str, Any] = json.loads(path.read_text())
    snapshot = out / f"probe-{k}.snapshot"
    if snapshot.exists():
        answer.update(sites.group(snapshot))
        snapshot.unlink()
    return answer


def describe(answer: dict[str, Any]) -> list[str]:
    """An answer as lines: the heap's parts, then the top sites (if traced)."""
    m, p = answer["malloc"], answer["pymalloc"]
    small = (
        f"pymalloc arenas {p['arenas_mb']:.0f} (used {p['used_mb']:.1f}, free {p['free_mb']:.1f})"
        if p["arenas_mb"] == p["arenas_mb"]  # NaN when pymalloc is hooked (tracemalloc) or not used
        else "pymalloc arenas (n/a: tracemalloc on or PYTHONMALLOC set)"
    )
    lines = [
        f"    heap: rss {answer['rss_mb']:.1f} MB = malloc in use {m['in_use_mb']:.1f}"
        f" (mmapped {m['mmap_mb']:.1f}) + malloc free, retained {m['free_mb']:.1f} + {small}"
        " + the rest (code, stacks, untouched pages)"
    ]
    lines.append(
        "    objects holding the most (type count (shallow MB)): "
        + ", ".join(f"{t['type']} {t['count']} ({t['mb']:.1f})" for t in answer["types"])
    )
    if "traced_mb" in answer:
        lines.append(
            f"    traced (live Python allocations) {answer['traced_mb']:.1f} MB;"
            f" tracemalloc's own {answer['tracemalloc_mb']:.1f} MB (in the RSS only with tracemalloc on)"
        )
        for kind, title in (("by_repo_line", "innermost repo frame"), ("by_line", "allocating line")):
            lines.append(f"    top sites by {title}:      MB   growth    blocks")
            lines += [
                f"      {row['site'][-70:]:<70} {row['mb']:7.1f} {row['growth_mb']:+8.1f} {row['blocks']:9d}"
                for row in answer[kind]
            ]
    return lines


def main() -> int:
    out, frames, argv = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    if frames > 0:
        tracemalloc.start(frames)
    signal.signal(signal.SIGUSR1, Probe(out))
    sys.path.insert(0, str(REPO))
    from sidecar.cli import main as sidecar_main

    return sidecar_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
