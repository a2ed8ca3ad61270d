"""sidecar.gc_tune: what exists when the sidecar is built is frozen out of collections; the young
generation's threshold raised. Run in a child interpreter: it changes the whole process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from sidecar.gc_tune import GC_THRESHOLDS

_ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_tune_gc_freezes_what_exists_and_sets_the_thresholds() -> None:
    out = _run(
        """
        import gc
        from sidecar.gc_tune import tune_gc
        kept = [{"made": "before"} for _ in range(1000)]  # long-lived containers, as a built sidecar's
        assert gc.get_freeze_count() == 0
        tune_gc()
        print(gc.get_freeze_count() >= len(kept), gc.get_threshold(), sep=";")
        """
    )
    assert out.split(";") == ["True", str(GC_THRESHOLDS)]


def test_cyclic_garbage_made_after_tuning_is_still_collected() -> None:
    out = _run(
        """
        import gc, weakref
        from sidecar.gc_tune import tune_gc
        tune_gc()
        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: reference counting alone never frees it
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        print(gone() is None)
        """
    )
    assert out == "True"
