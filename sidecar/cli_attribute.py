"""``jouletrace attribute``: re-attribute a recorded run offline, under any split rule.

    jouletrace attribute --energy counter.csv --iterations iterations.jsonl \
        [--rule fitted] [--out records.jsonl]

Inputs (documented in docs/attribution.md, "Re-analysing a recorded run"):

* ``--energy``: the energy counter as the meters record it, the replay CSV v1
  (sidecar/meters/replay.py: ``t_s,device,energy_j,...``). ``t_s`` must be Unix
  seconds, or give ``--energy-offset-s`` (added to every ``t_s``).
* ``--iterations``: the work stream, one datagram payload per line exactly as
  the senders put it on the wire: the vLLM scheduler hook's messages (``"v": 2``,
  sidecar/contracts/scheduler_wire.py) and/or the stat-logger plugin's (``"v": 1``).
  Each is fed to the same receiver the live sidecar runs, at its ``wall`` time.

Output: one final record per line (the HTTP API's JSON form) to ``--out`` or
stdout, and a summary on stderr: requests, measured, attributed and idle
energy, conservation error. Units: J, s.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import TextIO

from sidecar.attribution.floor import FloorEstimate
from sidecar.attribution.rules import RULES, make_rule
from sidecar.contracts.scheduler_wire import VERSION as HOOK_VERSION
from sidecar.errors import ConfigError
from sidecar.knobs import knob_named
from sidecar.meters.base import Reading
from sidecar.meters.replay import ReplayMeter
from sidecar.offline import OfflineResult, PayloadSource, attribute_readings
from sidecar.taps.spans import TapOutput
from sidecar.taps.vllm_hook import HookReceiver
from sidecar.taps.vllm_plugin import PluginReceiver

__all__ = ["add_arguments", "load_stream", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--energy", required=True, type=Path, help="counter trace, replay CSV v1 (t_s in Unix s)"
    )
    parser.add_argument(
        "--iterations", required=True, type=Path, help="JSONL of hook (v2) / plugin (v1) messages"
    )
    parser.add_argument("--rule", default="fitted", choices=RULES, help="split rule (default: fitted)")
    step_weight = knob_named("fit_step_weight")  # the sidecar's knob: its default, choices and help
    parser.add_argument(
        "--fit-step-weight", default=step_weight.default, choices=step_weight.choices, help=step_weight.help
    )
    parser.add_argument(
        "--energy-offset-s", type=float, default=0.0, help="added to the CSV's t_s to get Unix s"
    )
    parser.add_argument("--floor-w", type=float, default=None, help="idle floor (W), instead of measuring it")
    parser.add_argument(
        "--settle-s", type=float, default=0.5, help="ticks sealed this far behind the stream (s)"
    )
    parser.add_argument("--model", default="unknown", help="model name for records without one")
    parser.add_argument("--out", type=Path, default=None, help="records JSONL (default: stdout)")


def load_stream(path: Path) -> list[tuple[float, bytes]]:
    """``(wall Unix s, payload)`` per line of a JSONL message stream; a bad line names its number."""
    out: list[tuple[float, bytes]] = []
    try:
        f = path.open("rb")
    except OSError as err:
        raise ConfigError(f"--iterations: cannot read {path}: {err.strerror or err}") from err
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                wall = float(json.loads(line)["wall"])
            except (ValueError, KeyError, TypeError) as err:
                raise ConfigError(f"{path}:{number}: not a message with a 'wall' time ({err})") from err
            out.append((wall, line.strip()))
    return out


class _Dispatch:
    """Feeds each payload to the receiver of its wire version (v2: hook, v1: plugin), hook first."""

    def __init__(self, model: str, wall: Callable[[], float]) -> None:
        # the receivers date each datagram against ``wall``: the replay's clock, not today's
        self.hook = HookReceiver(lambda unix_s: unix_s, default_model=model, wall=wall)
        self.plugin = PluginReceiver(lambda unix_s: unix_s, default_model=model, wall=wall)

    def feed(self, data: bytes, out: TapOutput) -> None:
        # the message's own "v" field, wherever the encoder put it (load_stream checked it is JSON)
        message = json.loads(data)
        is_hook = isinstance(message, dict) and message.get("v") == HOOK_VERSION
        (self.hook.feed if is_hook else self.plugin.feed)(data, out)


def warn_if_updates_only(readings: list[Reading], path: Path) -> None:
    """Say so when no row repeats the row before: the rows are taken as reads, and an update is dated
    halfway back to the read before it, so a trace of the counter's updates alone dates every update
    half an update period early (50 ms at 100 ms), which an independent check (probe 13) found
    costs per-request accuracy many times over, with no word said."""
    if len(readings) > 10 and all(a.energy_j != b.energy_j for a, b in pairwise(readings)):
        print(
            f"jouletrace attribute: warning: {path}: every row changes the counter, so the rows look like "
            "its updates alone; they are taken as reads, each update dated halfway back to the row "
            "before it (half an update period early): record the reads as polled, repeats included",
            file=sys.stderr,
        )


def _attribute(args: argparse.Namespace) -> OfflineResult:
    meter = ReplayMeter(args.energy)
    devices = meter.devices
    readings = [Reading(r.t_s + args.energy_offset_s, r.energy_j) for r in meter.readings()]
    warn_if_updates_only(readings, args.energy)
    dispatch = _Dispatch(args.model, wall=lambda: source.now_s)
    source = PayloadSource(dispatch.feed, load_stream(args.iterations))
    floor = FloorEstimate(",".join(d.id for d in devices), override_w=args.floor_w)
    rule = make_rule(args.rule, floor=floor, step_weight=args.fit_step_weight)
    return attribute_readings(readings, devices, source, rule=rule, settle_s=args.settle_s, model=args.model)


def _open_out(path: Path | None) -> TextIO:
    if path is None:
        return sys.stdout
    try:
        return path.open("w", encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"--out: cannot write {path}: {err.strerror or err}") from err


def run(args: argparse.Namespace) -> int:
    if args.floor_w is not None and not (args.floor_w >= 0 and args.floor_w < float("inf")):
        raise ConfigError(f"--floor-w must be a finite number >= 0, got {args.floor_w}")
    out = _open_out(args.out)  # before the work: a wrong folder is said at once
    try:
        res = _attribute(args)
        for rec in sorted(res.records.values(), key=lambda r: (r.end_s or 0.0, r.request_id)):
            out.write(json.dumps(rec.to_json(), separators=(",", ":")) + "\n")
    finally:
        if args.out:
            out.close()
    totals = res.attributor.totals
    attributed = totals.measured_j - totals.idle_j
    print(
        f"requests {len(res.records)} | measured {totals.measured_j:.3f} J | "
        f"attributed {attributed:.3f} J | idle {totals.idle_j:.3f} J | "
        f"conservation error {totals.conservation_error_j:.3e} J | rule {args.rule}",
        file=sys.stderr,
    )
    return 0
