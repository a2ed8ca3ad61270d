"""A simulated run written in the offline format ``jouletrace attribute`` reads.

Two files (docs/attribution.md, "Re-analysing a recorded run"):

* ``counter.csv``: the replay CSV v1 (``t_s,device,energy_j``), the counter as a
  poller reads it every ~20 ms, ``t_s`` in Unix seconds;
* ``iterations.jsonl``: the scheduler hook's datagrams, one JSON payload per line
  exactly as sent (:mod:`sidecar.contracts.scheduler_wire`).

Used by the tests of the offline command, and as an example of the format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sidecar.sim.run import SimRun
from sidecar.sim.taps import UNIX_OFFSET_S, hook_datagrams

__all__ = ["write_recording"]


def write_recording(
    run: SimRun, folder: Path, *, device: str = "GPU-sim-0", poll_s: float = 0.02
) -> tuple[Path, Path]:
    """Write ``run`` as ``counter.csv`` and ``iterations.jsonl`` in ``folder``; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    poll_t = np.arange(0.0, run.duration_s + poll_s, poll_s)
    values = run.counter.values_at(poll_t)
    counter = folder / "counter.csv"
    with counter.open("w") as f:
        f.write("# jouletrace replay trace v1\n")
        f.write("# gpu: simulated H100-class GPU (sidecar/sim); t_s in Unix seconds\n")
        f.write("t_s,device,energy_j\n")
        for t, v in zip(poll_t.tolist(), values.tolist(), strict=True):
            f.write(f"{t + UNIX_OFFSET_S:.6f},{device},{v:.3f}\n")
    iterations = folder / "iterations.jsonl"
    with iterations.open("wb") as f:
        for _, data in hook_datagrams(run):
            f.write(data + b"\n")
    return counter, iterations
