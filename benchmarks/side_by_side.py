"""A table of CPU per tick, the code now beside a baseline in the same run, for a few sizes.

:func:`tick_benchmark` is the whole ``main`` of such a benchmark (``idle_requests.py``,
``proxy_idle.py``): its ``--ticks``, the table, and the last line ``LABEL SIZE tick ms N
(baseline M)`` for the largest size.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TypeVar

_Kind = TypeVar("_Kind")
Run = Callable[[int], tuple[float, int]]  # size -> (CPU s per tick, what it made: must agree)


def side_by_side(
    sizes: Sequence[int], baseline: Run, now: Run, size_name: str, made_name: str
) -> tuple[float, float]:
    """Print one row per size (ms per tick of each, and whether both made the same); the last
    size's (now, baseline) seconds per tick."""
    print(f"{size_name:>14} {'baseline ms/tick':>17} {'now ms/tick':>12} {made_name:>17}")
    now_s = base_s = 0.0
    for n in sizes:
        base_s, base_made = baseline(n)
        now_s, now_made = now(n)
        agree = "same" if base_made == now_made else f"{base_made} vs {now_made}"
        print(f"{n:>14,} {base_s * 1e3:>17.3f} {now_s * 1e3:>12.3f} {agree:>17}")
    return now_s, base_s


def tick_benchmark(
    doc: str,
    default_ticks: int,
    run: Callable[[_Kind, int, int], tuple[float, int]],
    kinds: tuple[_Kind, _Kind],
    sizes: Sequence[int],
    names: tuple[str, str, str],
    setting: str,
) -> None:
    """Parse ``--ticks``, say the ``setting`` (what each tick does), print the table of ``run(kind,
    size, ticks)`` for the (baseline, now) ``kinds``, then the last line; ``names``: the sizes', what
    the runs made, and the last line's label."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=default_ticks)
    ticks = parser.parse_args().ticks
    print(f"{ticks} ticks of {setting}")
    baseline, now = kinds
    size_name, made_name, label = names
    now_s, base_s = side_by_side(
        sizes, lambda n: run(baseline, n, ticks), lambda n: run(now, n, ticks), size_name, made_name
    )
    print(f"{label} {sizes[-1]} tick ms {now_s * 1e3:.3f} (baseline {base_s * 1e3:.3f})")
