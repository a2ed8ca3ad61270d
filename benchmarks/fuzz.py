"""Fuzz the sidecar's inputs: >= 100,000 hostile cases through the real tap code.

The hypothesis strategies of the test suite (``tests/sidecar/taps/fuzzing*.py``), at a
large count: vLLM plugin datagrams (good rows next to rows with one hostile field),
OTLP trace exports serialized to protobuf and handed to the receiver's gRPC method
(good vLLM and diffusion spans next to poisoned ones), scheduler-hook datagrams on the
v2 wire (a good engine run with bad datagrams in between, bad rows inside good
datagrams, datagrams no engine would send), arbitrary bytes as datagrams and as
exports, and the HTTP API through aiohttp's router and the real handlers (arbitrary
request ids, any path and query, hostile ``/v1/energy`` bounds). Each case asserts that
no exception escapes except the documented gRPC refusal, and that no good item next to
a bad one is lost.

Cases run in ``--workers`` processes, each with its own hypothesis seed; a property
that fails stops in that worker and counts one failure (its falsifying case is
printed). Ends with one line ``cases N failures F``.

    .venv/bin/python benchmarks/fuzz.py [--cases 100000] [--workers 2] [--seed 0]

The property ``hook_rows`` (a bad row inside a good hook datagram costs no good request
of that datagram) fails while the v2 decoder rejects a datagram whole for one bad row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the strategies live in the test tree

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sidecar.export.api import make_app  # noqa: E402
from tests.sidecar.taps import fuzzing as f  # noqa: E402
from tests.sidecar.taps import fuzzing_hook as fh  # noqa: E402
from tests.sidecar.taps import fuzzing_http as fx  # noqa: E402

# share of the cases per property (sums to 1)
SHARES: dict[str, float] = {
    "plugin_datagram": 0.2,
    "otlp_export": 0.2,
    "plugin_bytes": 0.05,
    "otlp_bytes": 0.05,
    "hook_stream": 0.1,
    "hook_rows": 0.1,
    "hook_message": 0.1,
    "hook_bytes": 0.05,
    "http_request_id": 0.05,
    "http_path": 0.05,
    "energy_query": 0.05,
}
KNOWN: dict[str, dict[str, Any]] = {"req-1": {"request_id": "req-1"}}


def _property(name: str) -> tuple[Any, Callable[[Any], None]]:
    """The strategy and the check of one property."""
    simple: dict[str, tuple[Any, Callable[[Any], None]]] = {
        "plugin_datagram": (f.plugin_datagrams(), f.check_plugin_datagram),
        "otlp_export": (f.otlp_exports(), f.check_otlp_export),
        "plugin_bytes": (f.datagram_bytes, f.check_plugin_bytes),
        "otlp_bytes": (st.binary(max_size=2048), f.check_otlp_bytes),
        "hook_stream": (fh.hook_streams(), fh.check_hook_stream),
        "hook_rows": (fh.hook_rows(), fh.check_hook_rows),
        "hook_message": (fh.hook_messages, fh.check_hook_message),
        "hook_bytes": (f.datagram_bytes, fh.check_hook_bytes),
    }
    if name in simple:
        return simple[name]
    loop = asyncio.new_event_loop()
    if name == "http_request_id":
        app = make_app(metrics=bytes, lookup=KNOWN.get, ready=lambda: (True, ""))
        return st.one_of(f.http_ids, st.sampled_from(sorted(KNOWN))), lambda rid: loop.run_until_complete(
            f.check_http_path(app, KNOWN, rid)
        )
    app = fx.energy_app()
    if name == "http_path":
        return fx.http_paths, lambda case: loop.run_until_complete(fx.check_http_path(app, case))
    return fx.energy_queries, lambda params: loop.run_until_complete(fx.check_energy_query(app, params))


def run_share(name: str, n: int, worker_seed: int) -> tuple[str, int, int, str, float]:
    """Run ``n`` cases of one property in this process: (name, cases, failures, report, CPU s)."""
    cpu0_s = time.process_time()
    count = [0]
    strategy, check = _property(name)

    @seed(worker_seed)
    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def prop(case: Any) -> None:
        count[0] += 1
        check(case)

    try:
        prop()
    except Exception:  # hypothesis re-raises the failing case's error with the case in its notes
        return name, count[0], 1, traceback.format_exc(limit=8), time.process_time() - cpu0_s
    return name, count[0], 0, "", time.process_time() - cpu0_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    jobs = []
    for i, (name, share) in enumerate(SHARES.items()):
        per_worker = -(-int(args.cases * share) // args.workers)  # ceil: at least the share in all
        jobs += [(name, per_worker, args.seed * 1000 + 10 * i + w) for w in range(args.workers)]
    t0 = time.perf_counter()
    totals: dict[str, list[int]] = {name: [0, 0] for name in SHARES}
    cpu_by: dict[str, float] = dict.fromkeys(SHARES, 0.0)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for name, cases, failures, report, job_cpu_s in pool.map(run_share, *zip(*jobs, strict=True)):
            totals[name][0] += cases
            totals[name][1] += failures
            cpu_by[name] += job_cpu_s
            if report:
                print(f"FAILED {name}:\n{report}", file=sys.stderr)
    wall_s = time.perf_counter() - t0
    for name, (cases, failures) in totals.items():
        print(f"{name:16s} cases {cases:7d} failures {failures}  ({cpu_by[name]:.0f} CPU s)")
    cpu_s = sum(cpu_by.values())
    n = sum(c for c, _ in totals.values())
    print(
        f"{args.workers} worker(s), {wall_s:.0f} s wall, {cpu_s:.0f} CPU s, {n / cpu_s:.0f} cases per CPU s"
    )
    print(f"cases {n} failures {sum(f for _, f in totals.values())}")


if __name__ == "__main__":
    main()
