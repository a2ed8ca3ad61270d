"""A table of CPU per tick, the code now beside a baseline in the same run, for a few sizes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
