"""PNG plots of a run or a sweep (matplotlib, Agg backend: no display needed).

- ``energy_per_response.png``: energy per response by task (J, log scale; median and p90);
- ``power.png``: power over time from the sidecar's device counter (W), windows shaded;
- ``latency_vs_j_per_token.png``: the time-energy frontier (e2e latency p50 vs J/token), one point
  per phase or sweep level;
- ``j_per_token_vs_batch.png`` (sweeps): J/token vs batch size with throughput per watt (tokens/J)
  on a second axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

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
    pts = [
        (
            ph["latency_s"]["e2e"]["p50"],
            ph["j_per_unit_study"] or ph.get("j_per_unit_per_request_sum"),
            ph["phase"],
        )
        for ph in data["phases"]
        if ph.get("unit") == "token"
        and (ph.get("latency_s") or {}).get("e2e")
        and (ph.get("j_per_unit_study") or ph.get("j_per_unit_per_request_sum"))
    ]
    if pts:
        written.append(_frontier(pts, out_dir, note))
    return written


def _frontier(pts: list[tuple[float, float, str]], out_dir: Path, note: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts])
    for x, y, label in pts:
        ax.annotate(label, (x, y), fontsize=7)
    ax.set_xlabel("e2e latency p50 (s)")
    ax.set_ylabel("J/token")
    ax.set_title("Time-energy frontier" + note)
    return _save(fig, out_dir / "latency_vs_j_per_token.png")


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
