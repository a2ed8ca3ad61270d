"""The ledger's CPU and disk writes a record at the sidecar's rates: each tick's, or written together.

The sidecar hands the ledger each tick's final records (:meth:`Ledger.put_new`, a tick every
``tick_interval_s``, 0.1 s by default). Written at once (``ledger_write_every_s`` 0, the ledger's
only way before this change) a tick's few records each land on their own page of the random-id
index and the commit writes every page it changed; written together (``ledger_write_every_s``, 1 s by
default) one write carries a second's records. Here the real :class:`~sidecar.export.store.Ledger`
takes the records of a sidecar finishing ``rate`` requests a second, one tick's at a time on a
simulated clock (no sleeping), into a file already holding ``--stored`` records (the id index at
a size a running sidecar has), both ways side by side, tick by tick, for three rates: the study's
busiest H100 (27 responses/s, ``study_rate.py``), eight B200s each serving on its own (422/s)
and ``ingest_grpc.py``'s flood (10,000/s). Ids are as random as vLLM's ``chatcmpl-<32 hex>``.

Printed per rate and way: the CPU per record (``time.thread_time``: building the rows, the look-up
of stored ids, SQLite), the bytes written per record (``wchar`` of ``/proc/self/io``: WAL pages and
checkpoints; Linux) and the commits a second. Ends with one line
``ledger together us per record at 422/s N (each tick M)``.

    .venv/bin/python benchmarks/ledger_together.py [--stored 100000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ledger_insert import batch_of
from scratch import scratch_dir

from sidecar import knobs
from sidecar.attribution.record_batch import RecordBatch
from sidecar.export.store import Ledger

TICK_S: float = knobs.default("tick_interval_s")
TOGETHER_S: float = knobs.default("ledger_write_every_s")
RATES = (27, 422, 10_000)


def written_bytes() -> int:
    """Bytes this process has written (``wchar``), or 0 where /proc has no io file."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Way:
    """One ledger file written one way, on the simulated clock; its CPU, bytes and commits."""

    def __init__(self, path: Path, every_s: float, now: list[float], stored: int) -> None:
        self.now = now
        self.ledger = Ledger(path, clock=lambda: now[0], write_every_s=every_s)
        for k in range(0, stored, 16_384):  # the file as a running sidecar has it: ``stored`` records
            self.ledger.put_many(batch_of(min(16_384, stored - k)))
        self.cpu_s, self.bytes = 0.0, 0
        self.writes0 = self.ledger.counts["stored"]

    def put(self, batch: RecordBatch, *, force: bool = False) -> bool:
        """One tick's records, as the sidecar's tick hands them on (``force``: the stop's); whether a
        write was made. Its CPU and bytes written are added up."""
        stored = self.ledger.counts["stored"]
        b0, t0 = written_bytes(), time.thread_time()
        self.ledger.put_new(batch, now_s=self.now[0], force=force)
        self.cpu_s += time.thread_time() - t0
        self.bytes += written_bytes() - b0
        return self.ledger.counts["stored"] != stored

    def stop(self) -> None:
        self.put(RecordBatch(), force=True)
        self.ledger.close()


def run_rate(tmp: Path, rate: int, seconds: float, stored: int) -> dict[str, tuple[float, float, float]]:
    now = [1_000_000.0]
    ways = {
        "each tick": Way(tmp / f"tick-{rate}.db", 0.0, now, stored),
        f"together ({TOGETHER_S:g} s)": Way(tmp / f"together-{rate}.db", TOGETHER_S, now, stored),
    }
    commits = dict.fromkeys(ways, 0)
    ticks = int(seconds / TICK_S)
    owed = 0.0
    for k in range(ticks):
        now[0] += TICK_S
        owed += rate * TICK_S
        n = int(owed)
        owed -= n
        if not n:
            continue
        batch = batch_of(n)
        names = list(ways)
        for name in names[k % 2 :] + names[: k % 2]:  # each goes first in turn
            commits[name] += ways[name].put(batch)
    out = {}
    for name, way in ways.items():
        way.stop()
        total = way.ledger.counts["stored"] - way.writes0
        out[name] = (way.cpu_s / total * 1e6, way.bytes / total, commits[name] / seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=100_000, help="records in each file before the run")
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated seconds of each rate")
    args = parser.parse_args()
    print(
        f"ticks of {TICK_S:g} s on a simulated clock, {args.seconds:g} s a rate, into files holding "
        f"{args.stored} records; per record stored:"
    )
    print(f"  {'rate':>10s}  {'way':16s} {'CPU us':>8s} {'bytes written':>14s} {'commits/s':>10s}")
    results = {}
    with scratch_dir("jt-ledger-together-") as tmp:
        for rate in RATES:
            seconds = args.seconds if rate < 10_000 else min(args.seconds, 5.0)  # the flood: fewer seconds
            results[rate] = run_rate(tmp, rate, seconds, args.stored)
            for name, (us, written, commits) in results[rate].items():
                print(f"  {rate:>8d}/s  {name:16s} {us:8.1f} {written:14.0f} {commits:10.1f}")
    tick, together = (results[422][name][0] for name in results[422])
    print(f"ledger together us per record at 422/s {together:.1f} (each tick {tick:.1f})")


if __name__ == "__main__":
    main()
