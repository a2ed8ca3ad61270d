"""PNG plots of a run or a sweep (matplotlib, Agg backend: no display needed).

- ``energy_per_response.png``: energy per response by task (J, log scale; median and p90), with
  the study's J/response range on H100 and B200 beside each task;
- ``vs_study.png``: your J/unit per task (study method; grey when not comparable) beside the
  study's range on H100 and B200 (:mod:`loadgen.reference`);
- ``power.png``: power over time from the sidecar's device counter (W), windows shaded;
- ``latency_vs_j_per_token.png``: the time-energy frontier (e2e latency p50 vs J/token), one point
  per phase or sweep level;
- ``j_per_token_vs_batch.png`` (sweeps): J/token vs batch size with throughput per watt (tokens/J)
  on a second axis, and the study's published J/token vs batch curves of the swept tasks (grey).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loadgen.reference import published
from loadgen.report_study import study_range

__all__ = ["plot_run", "plot_sweep"]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _source_note(sources: set[str]) -> str:
    """Title suffix naming where the joules came from; an estimate always says so."""
    shown = sorted(s for s in sources if s and s != "measured")
    return f" [{', '.join(shown)} energy]" if shown else ""


def plot_run(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """Plots of one results.json object; returns the files written."""
    written: list[Path] = []
    note = _source_note({s for p in data["phases"] for s in p.get("energy_sources", [])})
    tasks = [t for t in data["tasks"] if t.get("energy_per_response_j")]
    if tasks:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        names = [t["task"] for t in tasks]
        p50 = [t["energy_per_response_j"]["p50"] for t in tasks]
        p90 = [t["energy_per_response_j"]["p90"] for t in tasks]
        ax.bar(names, p50, label="median")
        ax.scatter(names, p90, color="black", marker="_", s=200, label="p90")
        _study_bars(ax, tasks, "j_per_response")
        ax.set_yscale("log")
        ax.set_ylabel("energy per response (J)")
        ax.set_title("Energy per response by task" + note)
        ax.legend()
        ax.tick_params(axis="x", rotation=20)
        written.append(_save(fig, out_dir / "energy_per_response.png"))
    power = data.get("power_w") or []
    if power:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot([p[0] for p in power], [p[1] for p in power], lw=1)
        for i, ph in enumerate(data["phases"]):
            w = ph.get("window")
            if w:
                ax.axvspan(
                    w["open_s"], w["close_s"], alpha=0.2, color=f"C{i + 1}", label=f"{ph['phase']} window"
                )
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel("power (W)")
        ax.set_title("Device power (sidecar counter)" + note)
        if data["phases"]:
            ax.legend(fontsize=7)
        written.append(_save(fig, out_dir / "power.png"))
    if any(t.get("study") for t in data["tasks"]):
        written.append(_vs_study(data, out_dir, note))
    pts = [
        (
            ph["latency_s"]["e2e"]["p50"],
            ph.get("j_per_unit_window") or ph.get("j_per_unit_per_request_sum"),
            ph["phase"],
        )
        for ph in data["phases"]
        if ph.get("unit") == "token"
        and (ph.get("latency_s") or {}).get("e2e")
        and (ph.get("j_per_unit_window") or ph.get("j_per_unit_per_request_sum"))
    ]
    if pts:
        written.append(_frontier(pts, out_dir, note))
    return written


def _study_bars(ax: Any, tasks: list[dict[str, Any]], key: str) -> None:
    """The study's range on each GPU as a vertical bar beside each task (x offsets -0.25 / +0.25)."""
    for g, dx, color in (("h100", -0.25, "tab:green"), ("b200", 0.25, "tab:purple")):
        xs, lo, hi = [], [], []
        for i, t in enumerate(tasks):
            rng = study_range(t.get("study"), g, key)
            if rng:
                xs.append(i + dx)
                lo.append(rng[0])
                hi.append(rng[1])
        if xs:
            ax.vlines(xs, lo, hi, color=color, lw=3, alpha=0.7, label=f"study {g.upper()} range")
            ax.scatter(xs + xs, lo + hi, color=color, marker="_", s=120)  # a one-model range still shows


def _vs_study(data: dict[str, Any], out_dir: Path, note: str) -> Path:
    """Per task: your J/unit (study method, or per-request sum) beside the study's ranges (log scale)."""
    phases = {p["phase"]: p for p in data["phases"]}
    tasks = [t for t in data["tasks"] if t.get("study")]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, t in enumerate(tasks):
        p = phases.get(t["task"], {})
        mine = p.get("j_per_unit_study")
        shown = mine if mine is not None else p.get("j_per_unit_window") or t.get("j_per_unit")
        if shown:
            ax.scatter([i], [shown], color="black" if mine is not None else "grey", zorder=3,
                       label="yours" if mine is not None else "yours (not comparable)")  # fmt: skip
    _study_bars(ax, tasks, "j_per_unit")
    ax.set_xticks(range(len(tasks)), [f"{t['task']}\n(J/{t['study']['unit']})" for t in tasks], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("J per token / image / video")
    ax.set_title("Your run beside the study (ML.ENERGY, min-energy configs)" + note, fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out_dir / "vs_study.png")


def _frontier(pts: list[tuple[float, float, str]], out_dir: Path, note: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts])
    for x, y, label in pts:
        ax.annotate(label, (x, y), fontsize=7)
    ax.set_xlabel("e2e latency p50 (s)")
    ax.set_ylabel("J/token")
    ax.set_title("Time-energy frontier" + note)
    return _save(fig, out_dir / "latency_vs_j_per_token.png")


def _study_curves(ax: Any, tasks: set[str]) -> None:
    """The study's published J/token vs max_num_seqs curves of the swept tasks, grey, log-log."""
    curves = [c for c in published().get("j_per_token_vs_batch", []) if c.get("task") in tasks]
    for c in curves:
        xs = sorted(int(k) for k in c["points"])
        label = f"study: {c['model']} {c['task']} {c['gpu']}"
        ax.plot(xs, [c["points"][x] for x in xs], ":", color="grey", lw=1, label=label)
    if curves:
        ax.set_yscale("log")


def plot_sweep(points: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """J/token vs batch size (with tokens/J) and the frontier, from sweep points."""
    pts = [p for p in points if p.get("j_per_token")]
    if not pts:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["batch"] for p in pts]
    ax.plot(xs, [p["j_per_token"] for p in pts], "o-", label="J/token")
    ax.set_xscale("log", base=2)
    kind = "vLLM --max-num-seqs" if pts[0].get("kind") == "batch-cap" else "concurrency"
    ax.set_xlabel(f"batch size ({kind})")
    ax.set_ylabel("J/token")
    _study_curves(ax, {t for p in pts for t in p.get("tasks", [])})
    ax2 = ax.twinx()
    ax2.plot(xs, [p.get("tokens_per_j") or 0 for p in pts], "s--", color="tab:orange", label="tokens/J")
    ax2.set_ylabel("tokens/J (= tokens/s per W)")
    note = _source_note({s for p in pts for s in str(p.get("energy_source", "")).split(",")})
    ax.set_title("J/token vs batch size" + note)
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.88), fontsize=8)
    written = [_save(fig, out_dir / "j_per_token_vs_batch.png")]
    frontier = [(p["e2e_p50_s"], p["j_per_token"], f"B={p['batch']}") for p in pts if p.get("e2e_p50_s")]
    if frontier:
        written.append(_frontier(frontier, out_dir, note))
    return written
