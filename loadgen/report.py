"""Turning a run into results: ``results.json``, ``requests.csv`` and the terminal table.

``results.json`` (schema ``jouletrace.loadgen/1``) holds the config, the study's
protocol, skipped tasks with reasons, one block per phase (window, J/unit by the
study's method next to the per-request sum, latency, arrival error), one block per
task, and ``headline``: the figures the regression gate compares
(``j_per_token``, ``j_per_image``, ``j_per_video``, ``tokens_per_j`` and
``task_j_per_unit``). Headline J/unit prefers the study's method (window energy /
window units) and falls back to the per-request sum where the window had no energy.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loadgen.analysis import power_series
from loadgen.records import finite_j
from loadgen.report_study import print_study_table
from loadgen.rules import WINDOW_RULE
from loadgen.runner import RunOutcome
from loadgen.tasks import study_protocol

__all__ = ["SCHEMA", "headline", "print_table", "to_json", "write_csv", "write_json", "write_results"]

SCHEMA = "jouletrace.loadgen/1"
_UNIT_KEY = {"token": "j_per_token", "image": "j_per_image", "video": "j_per_video"}


def _phase_j_per_unit(p: dict[str, Any]) -> tuple[float | None, str]:
    if p.get("j_per_unit_study") is not None:
        return p["j_per_unit_study"], "study"
    if p.get("j_per_unit_window") is not None:
        return p["j_per_unit_window"], "window (not comparable with the study)"
    if p.get("j_per_unit_per_request_sum") is not None:
        return p["j_per_unit_per_request_sum"], "per-request"
    return None, "none"


def headline(phases: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """The gate's figures: J per token / image / video over all phases of that unit, and per task."""
    out: dict[str, Any] = {"task_j_per_unit": {}, "method": {}}
    for unit, key in _UNIT_KEY.items():
        energy = units = 0.0
        for p in phases:
            if p.get("unit") != unit:
                continue
            e = p.get("window_energy_j")
            if e is None and p.get("per_request_sum_j") is not None:
                e = p["per_request_sum_j"]
            if e is not None and p.get("window_units"):
                energy += e
                units += p["window_units"]
        out[key] = energy / units if units > 0 else None
    out["tokens_per_j"] = 1 / out["j_per_token"] if out.get("j_per_token") else None
    for p in phases:
        if p["phase"] != "mixed":
            value, method = _phase_j_per_unit(p)
            out["task_j_per_unit"][p["phase"]] = value
            out["method"][p["phase"]] = method
    for t in tasks:  # mixed phases: per task from the per-request records
        if t["task"] not in out["task_j_per_unit"] and t.get("j_per_unit") is not None:
            out["task_j_per_unit"][t["task"]] = t["j_per_unit"]
            out["method"][t["task"]] = "per-request"
    return out


def to_json(o: RunOutcome) -> dict[str, Any]:
    """The whole run as results.json's object."""
    return {
        "schema": SCHEMA,
        "created_unix_s": time.time(),
        "config": o.config.to_json(),
        "meta": o.meta,
        "study_protocol": study_protocol(),
        "window_rule": WINDOW_RULE,
        "skipped": o.skipped,
        "headline": headline(o.phases, o.tasks),
        "phases": o.phases,
        "tasks": o.tasks,
        "energy_samples": o.samples,
        "power_w": power_series(o.samples),
    }


_CSV_FIELDS = (
    "id",
    "task",
    "phase",
    "api",
    "status",
    "error",
    "target_s",
    "sent_s",
    "ttft_s",
    "e2e_s",
    "itl_mean_s",
    "output_tokens",
    "target_output_tokens",
    "prompt_tokens",
    "target_prompt_tokens",
    "output_units",
    "finish_reason",
    "response_id",
    "trace_id",
    "energy_j",
    "prefill_j",
    "decode_j",
    "approximate",
    "final",
    "energy_source",
    "fit_quality",
    "energy_note",
    "retries",
    "dataset_id",
)


def write_csv(o: RunOutcome, path: Path) -> None:
    """One row per request (times in s from the run's start, energies in J)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(_CSV_FIELDS)
        for r in o.results:
            e = r.energy or {}
            phases = e.get("phase_j") or {}
            itl = r.itl_s
            w.writerow(
                [
                    r.request.id,
                    r.request.task,
                    r.request.phase,
                    r.request.api,
                    r.status,
                    r.error or "",
                    f"{r.target_s:.6f}",
                    f"{r.sent_s:.6f}",
                    r.ttft_s,
                    r.e2e_s,
                    sum(itl) / len(itl) if itl else "",
                    r.output_tokens,
                    r.request.target_output_tokens,
                    r.prompt_tokens,
                    r.request.target_prompt_tokens,
                    r.output_units,
                    r.finish_reason or "",
                    r.response_id or "",
                    r.trace_id or "",
                    r.energy_j,
                    finite_j(phases.get("prefill")) if isinstance(phases, dict) else None,
                    finite_j(phases.get("decode")) if isinstance(phases, dict) else None,
                    e.get("approximate"),
                    e.get("final"),
                    e.get("energy_source"),
                    e.get("fit_quality", ""),
                    r.energy_note or "",
                    r.retries,
                    r.request.dataset_id,
                ]
            )


def write_results(o: RunOutcome, out_dir: Path) -> dict[str, Any]:
    """Write results.json and requests.csv into ``out_dir``; return the JSON object."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = write_json(to_json(o), out_dir / "results.json")
    write_csv(o, out_dir / "requests.csv")
    return data


def write_json(obj: Any, path: Path) -> Any:
    """Write ``obj`` as strict JSON (a float that is not finite becomes null); return what was written."""
    data = _finite(obj)
    path.write_text(json.dumps(data, indent=1, default=str, allow_nan=False), encoding="utf-8")
    return data


def _finite(x: Any) -> Any:
    """``x`` with every float that is not finite as None: results.json stays JSON (NaN is not),
    whatever a server or sidecar answered."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _prompt_cell(t: dict[str, Any]) -> str:
    target, measured = t.get("target_prompt_tokens"), t.get("prompt_tokens")
    if not target or not measured:
        return "-"
    vs = t.get("prompt_vs_target") or {}
    err = f" ({100 * vs['mean']:+.1f} %/{100 * vs['p50']:+.1f} %)" if "mean" in vs and "p50" in vs else ""
    want, got = (
        f"{_fmt(target['mean'])}/{_fmt(target['p50'])}",
        f"{_fmt(measured['mean'])}/{_fmt(measured['p50'])}",
    )
    return f"{want} -> {got}{err}"


def _comparable_cell(task: str, p: dict[str, Any], notes: list[str]) -> str:
    if p.get("comparable"):
        return "comparable"
    notes.append(
        f"({len(notes) + 1}) {task} is NOT comparable with the study: {p.get('not_comparable_reason')}"
    )
    return f"NO ({len(notes)})"


def _window_cell(p: dict[str, Any], window: dict[str, Any]) -> str:
    if p.get("timed_batches") is not None:
        return f"{p.get('batches_measured', 0)} timed batches"
    return f"{window.get('kind', '-')} {_fmt(window.get('duration_s'))} s" if window else "-"


def _task_table(data: dict[str, Any], phases: dict[str, Any], notes: list[str]) -> Table:
    """One row per task; a task without its own phase shares the mixed phase's figures."""
    table = Table(title=f"jouletrace loadgen: {data['meta']['mix']['name']}")
    for col in (
        "task",
        "ok/failed",
        "out tok p50",
        "prompt tok mean/p50 target -> measured",
        "J/unit (study method)",
        "J/unit (per-req)",
        "agree",
        "J/response p50",
        "e2e p50 s",
        "window",
        "vs the study",
    ):
        table.add_column(col, justify="right" if col not in ("task", "vs the study") else "left")
    for t in data["tasks"]:
        own = t["task"] in phases
        p = phases.get(t["task"], phases.get("mixed", {}))
        lat = p.get("latency_s", {}) or {}
        window = p.get("window") or {}
        agree = p.get("per_request_vs_study")
        table.add_row(
            f"{t['task']} ({t['unit']})",
            f"{t['ok']}/{t['failed']}",
            _fmt((t.get("output_tokens") or {}).get("p50")),
            _prompt_cell(t),
            _fmt(p.get("j_per_unit_window")) if own else "-",
            _fmt(p.get("j_per_unit_per_request_sum") if own else t.get("j_per_unit")),
            f"{100 * agree:+.2f} %" if isinstance(agree, float) and own else "-",
            _fmt((t.get("energy_per_response_j") or {}).get("p50")),
            _fmt((lat.get("e2e") or {}).get("p50")),
            _window_cell(p, window),
            _comparable_cell(t["task"], p, notes) if own else "-",
        )
    return table


def print_table(data: dict[str, Any], console: Console | None = None) -> None:
    """The terminal report: one row per task, then the headline and skipped tasks."""
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    phases = {p["phase"]: p for p in data["phases"]}
    notes: list[str] = []
    table = _task_table(data, phases, notes)
    console.print(table)
    for note in notes:
        console.print(note)
    console.print(f"window rule: {data.get('window_rule', WINDOW_RULE)}")
    print_study_table(data, console)
    h = data["headline"]
    console.print(
        f"J/token {_fmt(h.get('j_per_token'))}  tokens/J {_fmt(h.get('tokens_per_j'))}  "
        f"J/image {_fmt(h.get('j_per_image'))}  J/video {_fmt(h.get('j_per_video'))}"
    )
    sources = sorted({s for p in data["phases"] for s in p.get("energy_sources", [])})
    if sources:
        console.print(f"energy source: {', '.join(sources)}")
    for task, reason in data["skipped"].items():
        console.print(f"[yellow]skipped[/yellow] {task}: {reason}")
    failed = sum(p["failed"] for p in data["phases"])
    if failed:
        errors: dict[str, int] = {}
        for p in data["phases"]:
            for k, v in p["errors"].items():
                errors[k] = errors.get(k, 0) + v
        console.print(f"[red]{failed} failed request(s)[/red], excluded from energy figures: {errors}")
