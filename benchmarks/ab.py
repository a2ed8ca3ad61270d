"""One benchmark, two versions of the code, run in turn on this machine: the difference and its spread.

This VM's speed moves between runs of one code by more than most changes move a benchmark
(``ingest_grpc.py``: ~9,500-14,500 spans/s on one commit), so a change is judged by runs made
side by side. This script checks out ``BASE`` (a git revision) into a temporary worktree, takes
the candidate from ``--candidate`` (a revision, checked out the same way) or, by default, the
working tree as it is (uncommitted changes included), and runs the benchmark's command in each
(its working directory, with ``PYTHONPATH`` set to it; what git ignores there and the benchmarks
use, :data:`LINKED`, is linked to this checkout's) ``--pairs`` times, alternating base,
candidate, candidate, base, ... (ABBA: a drift of the machine's speed over the run falls on both
alike). Each run's figure is its last line as benchmarks print it, ``LABEL N`` or ``LABEL N
(...)``; the interpreter is this one (the same packages for both).

It prints every run's figure, each version's median and range, and per pair (the base run and
the candidate run next to it) the candidate's figure over the base's; their median is the
answer, and their range says whether it is more than the noise: a change whose ratios straddle
1.0 has not been shown to move the benchmark. Ends with one line ``ab LABEL ratio R (pairs P,
range LO-HI)``.

    .venv/bin/python benchmarks/ab.py BASE [--candidate REV] [--pairs 3] -- benchmarks/NAME.py [args]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_LAST = re.compile(r"^(?P<label>.*?)\s+(?P<value>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(?:\(.*\))?\s*$")
REPO = Path(__file__).resolve().parents[1]
LINKED = ("models", ".venv", ".venv-vllm")  # ignored by git, read by benchmarks: linked into a worktree


@dataclass(frozen=True)
class Figure:
    """A benchmark's last line: what it measures and the number."""

    label: str
    value: float


def last_figure(output: str) -> Figure:
    """The figure on the last non-empty line of a benchmark's output (``LABEL N`` or ``LABEL N (..)``);
    ``ValueError`` naming the line where it has none."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the benchmark printed nothing")
    match = _LAST.match(lines[-1].strip())
    if match is None or not match["label"]:
        raise ValueError(f"the benchmark's last line has no 'LABEL N' figure: {lines[-1]!r}")
    return Figure(match["label"], float(match["value"]))


def order(pairs: int) -> list[str]:
    """Which version runs when: ``base``/``candidate``, ABBA so a steady drift falls on both alike."""
    out: list[str] = []
    for k in range(pairs):
        out += ["base", "candidate"] if k % 2 == 0 else ["candidate", "base"]
    return out


def ratios(base: Sequence[float], candidate: Sequence[float]) -> list[float]:
    """Per pair, the candidate's figure over the base's (the pairs in run order)."""
    if len(base) != len(candidate) or not base:
        raise ValueError("each pair needs one figure of each version")
    if any(b == 0 for b in base):
        raise ValueError("a base figure of 0: no ratio")
    return [c / b for b, c in zip(base, candidate, strict=True)]


def checkout(rev: str, into: Path) -> Path:
    """``rev`` as a detached worktree at ``into`` (``ValueError`` if git does not know it)."""
    done = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(into), rev],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ValueError(f"cannot check out {rev!r}: {done.stderr.strip()}")
    for name in LINKED:
        if (REPO / name).exists() and not (into / name).exists():
            (into / name).symlink_to(REPO / name)
    return into


def run_once(where: Path, command: Sequence[str]) -> Figure:
    """The benchmark's command run in ``where`` with this interpreter; its last line's figure."""
    env = {**os.environ, "PYTHONPATH": str(where)}
    done = subprocess.run([sys.executable, *command], cwd=where, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} in {where} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return last_figure(done.stdout)


def compare(places: dict[str, Path], command: Sequence[str], pairs: int) -> tuple[str, list[float]]:
    """Run the pairs, print each run; the label and the per-pair ratios."""
    figures: dict[str, list[float]] = {"base": [], "candidate": []}
    label = ""
    for k, which in enumerate(order(pairs)):
        fig = run_once(places[which], command)
        if label and fig.label != label:
            raise ValueError(f"the versions print different figures: {label!r} and {fig.label!r}")
        label = fig.label
        figures[which].append(fig.value)
        print(f"  run {k + 1:>2} {which:<9} {fig.label} {fig.value:g}", flush=True)
    for which, values in figures.items():
        print(f"  {which:<9} median {statistics.median(values):g} (range {min(values):g}-{max(values):g})")
    return label, ratios(figures["base"], figures["candidate"])


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("base", help="the git revision to compare against (e.g. HEAD, main~3)")
    ap.add_argument("--candidate", default="", help="a git revision (default: the working tree as it is)")
    ap.add_argument("--pairs", type=int, default=3, help="base and candidate runs, each once a pair")
    ap.epilog = "then -- and the benchmark script with its arguments"
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, command = ap.parse_args(argv[:cut]), argv[cut + 1 :]
    if not command:
        ap.error("give the benchmark after --, e.g. -- benchmarks/ingest_grpc.py")
    if args.pairs < 1:
        ap.error("--pairs: at least 1")
    with tempfile.TemporaryDirectory(prefix="jouletrace-ab-") as tmp:
        places: dict[str, Path] = {}
        try:
            places["base"] = checkout(args.base, Path(tmp) / "base")
            candidate = args.candidate
            places["candidate"] = checkout(candidate, Path(tmp) / "candidate") if candidate else REPO
            print(f"base {args.base}, candidate {args.candidate or 'the working tree'}: {' '.join(command)}")
            label, per_pair = compare(places, command, args.pairs)
        finally:
            for path in (p for p in places.values() if p != REPO):  # the worktrees made
                remove = ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)]
                subprocess.run(remove, check=False)
    shown = ", ".join(f"{r:.3f}" for r in per_pair)
    print(f"  candidate over base, per pair: {shown}")
    print(
        f"ab {label} ratio {statistics.median(per_pair):.3f} "
        f"(pairs {len(per_pair)}, range {min(per_pair):.3f}-{max(per_pair):.3f})"
    )


if __name__ == "__main__":
    main()
