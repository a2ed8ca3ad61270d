"""The sidecar's memory under load: 10,000 requests in flight, an hour of timeline, a span flood.

The whole sidecar as users run it (``python -m sidecar.cli sidecar``) in its own process,
with the replay meter in place of NVML (there is no GPU here): a generated trace of one
device whose counter updates every 100 ms, one hour of it (36,000 updates, idle and busy
minutes alternating) played ``3600 / --hour-s`` times faster than real time, the poll
period shortened by the same factor so every update still becomes a timeline edge; after
the hour the trace goes on at 450 W, updates 100 ms apart as played. The phases, in
order, each on top of the previous ones:

* **start-up**: the sidecar ready (``/readyz``) and idle: the baseline;
* **hour**: wait until the replay has played its hour (timeline, ticks, fit and floor
  have seen an hour of readings);
* **in flight**: ``--in-flight`` requests (default 10,000) start over the vLLM plugin's UDP
  tap (``start`` rows, prefill done, no ``fin``; 150 per datagram), then a plugin
  iteration (decode work for every started request the plugin keeps) every 100 ms for
  ``--in-flight-s``; they stay in flight for the rest of the run;
* **flood**: ``--flood-s`` (default 60) of vLLM-shaped ``llm_request`` spans over real
  OTLP/gRPC, 512 spans per export (``otlp_flood.py``, as ``ingest_grpc.py`` sends them), from
  ``--exporters`` (8) exporters on one channel, each sending as fast as it is answered and
  backing off as OTel's exporters do when the sidecar refuses an export as retryable
  (``memory_flood.py``); then rest until ``/metrics`` answers (the tick has handled the
  queued spans; at most ``--rest-s``). The flood's line says what was sent, refused (by the
  sidecar's memory/backlog limit, ``otlp_memory_limit_mb``/``otlp_backlog_limit_rows``, or its
  queue) and accepted; the rest line how many spans became requests and the sidecar's own
  refusal counters.

RSS (``VmRSS`` of the sidecar process) is printed after each phase, with the sidecar's CPU
seconds (user + system, independent of how busy the machine is), and the peak over the
run (``VmHWM``); each phase's RSS, and the highest sampled, also in its two parts: anonymous memory
(what the sidecar's state and its allocators hold) and pages of files (the interpreter's and the
libraries' code, mapped from disk, which no change to the sidecar's state shrinks). The same run
prints the floor under it: the RSS of an interpreter that only
imports what this sidecar runs (``sidecar.cli_sidecar``, ``sidecar.wiring`` and the OTLP receiver,
which the wiring imports only when ``otlp_port`` is set).

    .venv/bin/python benchmarks/memory.py [--flood-s 60] [--hour-s 60] [--in-flight 10000]
        [--knob NAME=VALUE ...]   (sidecar knobs over the defaults, e.g. otlp_memory_limit_mb=0)

Last line: ``rss MB N``, N = the sidecar's peak RSS in MB.

Where the memory is (``memory_probe.py`` runs the same ``main()`` with the same knobs and
answers SIGUSR1 after each phase; the default run uses the plain command):

* ``--heap``: the RSS split into glibc malloc in use / freed but retained (fragmentation),
  pymalloc arenas used / free (fragmentation), and the object types holding the most MB (the
  gc-tracked objects and the str, bytes and NumPy arrays they hold; the census itself allocates
  for a moment, so the peak of such a run is not the figure: read the phases);
* ``--tracemalloc FRAMES``: also every live Python allocation, grouped by the innermost frame in
  the repository's code (which structure holds it) and by the allocating line, top ``--top``
  sites with their growth since the previous phase. Tracing slows the sidecar several times
  (the flood is answered far slower), and its own bookkeeping is in the RSS: read the sites
  and traced MB, not the RSS, of such a run.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # otlp_flood, also when loaded by path

from memory_flood import FloodCounts  # noqa: E402
from memory_flood import flood as flood_exporters  # noqa: E402
from memory_phases import Phases, Sampler, cpu_s, status_mb  # noqa: E402
from otlp_flood import build_exports  # noqa: E402
from scratch import scratch_dir  # noqa: E402

from sidecar.contracts.vllm_wire import encode  # noqa: E402
from tests.support import free_port, wait_http  # noqa: E402

UPDATE_S = 0.1  # the counter update period (NVML on an H200: 100 ms)
HOUR_S = 3600.0
POOL_EXPORTS = 16  # different exports cycled through


def write_trace(path: Path, hour_s: float, speed: float, tail_s: float) -> int:
    """A one-device replay trace: an hour of counter updates every 100 ms (idle and busy minutes
    alternating), then ``tail_s`` sidecar seconds of updates at 450 W, 100 ms apart *as played*
    (rows ``speed`` x 100 ms apart), so the phases after the hour see a live counter."""
    energy_j, lines = 1.0e6, ["# jouletrace replay trace v1", "t_s,device,energy_j,power_w,utilization"]
    t_s = 0.0
    for _ in range(round(hour_s / UPDATE_S) + round(tail_s / UPDATE_S)):
        busy = t_s >= hour_s or int(t_s // 60) % 2 == 1
        power_w = 450.0 if busy else 90.0
        energy_j += power_w * UPDATE_S
        lines.append(f"{t_s:.6f},GPU-replay,{energy_j:.3f},{power_w:.1f},{0.9 if busy else 0.0}")
        t_s += UPDATE_S if t_s < hour_s else UPDATE_S * speed
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 2


def import_floor() -> str:
    """Peak RSS of an interpreter that only imports what the sidecar runs here (MB), with the split
    of its RSS once imported (as :func:`memory_phases.rss_split`)."""
    modules = "sidecar.cli_sidecar, sidecar.wiring, sidecar.taps.otlp"
    code = (
        f"import os, resource, {modules}; from memory_phases import rss_split; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_split(os.getpid()))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).resolve().parent)])}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    peak_mb, split = out.stdout.strip().split(" ", 1)
    return f"{float(peak_mb):7.1f} MB {split}"


def metrics(port: int, timeout_s: float = 60.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The sidecar's /metrics, parsed: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def start_requests(port: int, n: int, seconds: float) -> None:
    """``n`` starts over the plugin's UDP tap, then an iteration every 100 ms for ``seconds``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pid, seq = 4242, 0

    def send(message: dict[str, object]) -> None:
        nonlocal seq
        for data in encode(
            {"v": 1, "pid": pid, "seq": seq, "wall": time.time(), "model": "bench", **message}
        ):
            sock.sendto(data, ("127.0.0.1", port))
        seq += 1

    for k in range(0, n, 150):  # 150 starts per datagram, as the plugin splits long lists
        rows = [[f"chatcmpl-idle-{i}", 512, 512, 0.05] for i in range(k, min(n, k + 150))]
        send({"start": rows, "live": True})
        time.sleep(0.002)
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # iterations: every started request decodes a token in each
        send({"it": [0.0, n, 0], "sched": [n, 0, 0.5], "live": True})
        time.sleep(0.1)
    sock.close()


def flood(port: int, seconds: float, exporters: int) -> FloodCounts:
    """``exporters`` exporters sending for ``seconds``, backing off when refused as retryable."""
    return flood_exporters(port, build_exports(POOL_EXPORTS), seconds, exporters)


def sidecar_cmd(
    tmp: Path, trace: Path, ports: dict[str, int], speed: float, probe: int | None, extra: Sequence[str] = ()
) -> list[str]:
    knobs = {
        "meter": "replay",
        "replay_path": str(trace),
        "replay_speed": str(speed),
        "poll_interval_s": str(UPDATE_S / speed),  # every counter update is read, just sooner
        "port": str(ports["http"]),
        "otlp_port": str(ports["otlp"]),
        "plugin_port": str(ports["plugin"]),
        "hook_port": "0",
        "proxy_wire_port": "0",
        "ledger_path": str(tmp / "ledger.db"),
        "model": "bench",
        "log_level": "warning",
        **dict(kv.split("=", 1) for kv in extra),
    }
    flags = [x for k, val in knobs.items() for x in ("--" + k.replace("_", "-"), val)]
    if probe is None:  # the command users run
        return [sys.executable, "-m", "sidecar.cli", "sidecar", *flags]
    probe_py = str(Path(__file__).resolve().parent / "memory_probe.py")  # same main(), answers SIGUSR1
    return [sys.executable, probe_py, str(tmp), str(probe), "sidecar", *flags]


def flood_probed(port: int, seconds: float, exporters: int, phase: Phases) -> FloodCounts:
    """:func:`flood`; when probing, the sidecar's heap is also printed twice during it."""
    if phase.probe_dir is None:
        return flood(port, seconds, exporters)
    result: list[FloodCounts] = []
    sender = threading.Thread(target=lambda: result.append(flood(port, seconds, exporters)), daemon=True)
    sender.start()
    for k in (1, 2):
        sender.join(timeout=max(0.0, seconds / 3 - 1.0))
        if sender.is_alive():
            phase(f"  flood, {k}/3 of the way")
    sender.join()
    return result[0]


def run_phases(args: argparse.Namespace, phase: Phases, ports: dict[str, int], sampler: Sampler) -> None:
    started = time.monotonic()
    phase("start-up (idle, baseline)")
    phase.t0_cpu_s = cpu_s(phase.pid)
    while time.monotonic() - started < args.hour_s + 2.0:  # the replay started with the process
        time.sleep(0.5)
    m = metrics(ports["http"])
    energy_kwh = total(m, "gen_ai_server_energy_joules_total") / 3.6e6
    phase("+ one hour replayed", f"energy attributed {energy_kwh:.3f} kWh")
    start_requests(ports["plugin"], args.in_flight, args.in_flight_s)
    time.sleep(1.0)
    m = metrics(ports["http"])
    pending = total(m, "jouletrace_requests_pending")
    phase(f"+ {args.in_flight} in flight", f"requests pending {pending:.0f}")
    flood_start = time.monotonic()
    sent = flood_probed(ports["otlp"], args.flood_s, args.exporters, phase)
    phase(f"+ {args.flood_s:.0f} s span flood", f"{args.exporters} exporters")
    print(f"  flood: {sent.line()}", flush=True)
    flood_end = time.monotonic()
    during = ", ".join(f"{mb:.0f}" for mb in sampler.maxima(flood_start, flood_end, 10.0))
    print(f"  rss during the flood, highest per 10 s (MB): {during}", flush=True)
    time.sleep(5.0)
    try:  # answered once the tick has handled the queued spans (the same loop serves HTTP)
        m = metrics(ports["http"], timeout_s=args.rest_s)
        handled = total(m, "jouletrace_tap_events_total", jouletrace_tap="vllm_spans", outcome="requests")
        after_s = time.monotonic() - flood_end
        pending = total(m, "jouletrace_requests_pending")
        refused = ", ".join(
            f"{k} {total(m, 'jouletrace_tap_events_total', jouletrace_tap='otlp', outcome=k):.0f}"
            for k in ("refused_memory", "refused_backlog", "refused_queue_full", "dropped")
        )
        rest = (
            f"llm_request spans handled {handled:.0f}, requests pending {pending:.0f}; "
            f"/metrics answered {after_s:.0f} s after the flood; sidecar counted: {refused}"
        )
    except OSError:  # a timeout: the loop is still busy with the flood's spans
        rest = f"/metrics unanswered {time.monotonic() - flood_end:.0f} s after the flood (loop busy)"
    phase("  after the flood, at rest", rest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--in-flight", type=int, default=10_000, help="requests started and never finished")
    ap.add_argument("--in-flight-s", type=float, default=3.0, help="seconds of iterations after the starts")
    ap.add_argument("--hour-s", type=float, default=60.0, help="wall seconds the one-hour replay takes")
    ap.add_argument("--flood-s", type=float, default=60.0, help="seconds of span flood")
    ap.add_argument("--rest-s", type=float, default=120.0, help="longest wait for /metrics after the flood")
    ap.add_argument("--exporters", type=int, default=8, help="OTLP exporters in the flood (threads)")
    ap.add_argument(
        "--knob", action="append", default=[], metavar="NAME=VALUE", help="a sidecar knob over its default"
    )
    ap.add_argument(
        "--heap", action="store_true", help="after each phase also print the heap's parts (glibc, pymalloc)"
    )
    ap.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace allocations FRAMES deep (implies --heap); print the top sites after each phase",
    )
    ap.add_argument(
        "--top", type=int, default=10, help="allocation sites printed per phase with --tracemalloc"
    )
    args = ap.parse_args()
    with scratch_dir("memory-bench-") as tmp:  # the ledger grows to ~500 MB: removed at the end
        measure(args, tmp)


def measure(args: argparse.Namespace, tmp: Path) -> None:
    """Start the sidecar on the hour's replay, run the phases, print the peak RSS."""
    probe = args.tracemalloc if args.heap or args.tracemalloc else None  # frames traced (0: heap only)
    trace = tmp / "hour.csv"
    speed = HOUR_S / args.hour_s
    rows = write_trace(trace, HOUR_S, speed, tail_s=args.in_flight_s + args.flood_s + 120.0)
    how = "-m sidecar.cli" if probe is None else f"benchmarks/memory_probe.py (tracemalloc frames {probe})"
    print(f"replay trace: {rows} readings (one hour, one device), played in {args.hour_s:.0f} s; "
          f"sidecar: {sys.executable} {how} sidecar --meter replay")  # fmt: skip
    print(f"{'imports only':<28} rss {import_floor()} (peak of that interpreter; its parts once imported)")
    ports = {"http": free_port(), "otlp": free_port(), "plugin": free_port(socket.SOCK_DGRAM)}
    log = tmp / "sidecar.log"
    proc = subprocess.Popen(
        sidecar_cmd(tmp, trace, ports, speed, probe, args.knob),
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    sampler = Sampler(proc.pid)
    try:
        wait_http(f"http://127.0.0.1:{ports['http']}/readyz", 60, proc, log)
        sampler.start()
        run_phases(args, Phases(proc.pid, tmp if probe is not None else None, args.top), ports, sampler)
        peak_mb = status_mb(proc.pid, "VmHWM")
    finally:
        sampler.stop.set()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            print("the sidecar did not stop within 60 s of SIGTERM: killed")
    sampled_mb = max(r for _, r in sampler.samples)
    split = sampler.split_at_max
    print(f"sidecar exit code {code}; RSS sampled every 0.2 s: max {sampled_mb:.1f} MB {split}")
    if code != 0:  # the scratch folder, log included, goes at the end: its tail here
        print(log.read_text(errors="replace")[-4000:])
    print(f"rss MB {peak_mb:.0f}")


if __name__ == "__main__":
    main()
