"""Whole runs through ``jouletrace loadgen`` against the fake server and a real sidecar process.

The fake server has no taps into the sidecar, so the sidecar measures the device
energy (cpu-model estimate) but attributes no request: energy assertions here are
about the study's window method; the per-request agreement is asserted against
vLLM in test_vllm_e2e.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sidecar.cli import main
from tests.loadgen.conftest import SidecarProcess, ThreadedFake
from tests.support import free_port

pytestmark = pytest.mark.integration


def _run(fake: ThreadedFake, sidecar: SidecarProcess, out: Path, *extra: str) -> int:
    return main([
        "loadgen", "run", "--server-url", fake.url, "--sidecar-url", sidecar.url,
        "--otlp-endpoint", sidecar.otlp, "--scale", "0.02", "--energy-wait-s", "1", "--quiet",
        "--min-window-s", "0.05", "--out", str(out), *extra,
    ])  # fmt: skip


def test_study_all_run_writes_results_csv_plots_with_window_energy_and_skips_multimodal(
    tmp_path: Path, sidecar: SidecarProcess
) -> None:
    fake = ThreadedFake(token_s=0.002, batch_cap=4)
    try:
        rc = _run(
            fake,
            sidecar,
            tmp_path,
            "--mix",
            "study-all",
            "--diffusion-url",
            fake.url,
            "--requests",
            "60",
            "--batch-cap",
            "4",
        )
    finally:
        fake.close()
    assert rc == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["skipped"]) == {"image-chat", "video-chat"}
    assert "multimodal" in data["skipped"]["image-chat"]
    phases = {p["phase"]: p for p in data["phases"]}
    assert set(phases) == {"lm-arena-chat", "gpqa", "sourcegraph-fim", "text-to-image", "text-to-video"}
    chat = phases["lm-arena-chat"]
    assert chat["window"]["kind"] == "steady-state" and chat["failed"] == 0
    assert chat["window_energy_j"] > 0 and chat["j_per_unit_window"] > 0
    assert data["headline"]["j_per_token"] > 0 and data["headline"]["j_per_image"] > 0
    image = phases["text-to-image"]  # the fake diffusion server names no batches: no timed batch
    assert image["comparable"] is False and "no timed batch" in image["not_comparable_reason"]
    assert image["j_per_unit_study"] is None and image["j_per_unit_window"] > 0
    assert data["headline"]["tokens_per_j"] == pytest.approx(1 / data["headline"]["j_per_token"])
    rows = list(csv.DictReader((tmp_path / "requests.csv").open()))
    assert len(rows) == 60
    chat_rows = [r for r in rows if r["task"] == "lm-arena-chat"]
    assert all(r["output_tokens"] == r["target_output_tokens"] for r in chat_rows)  # ignore_eos lengths
    assert all("no record" in r["energy_note"] for r in rows)  # no tap saw the fake server's requests
    for png in ("power.png", "latency_vs_j_per_token.png"):
        assert (tmp_path / png).stat().st_size > 1000
    length = data["meta"]["length_distributions"]["lm-arena-chat"]
    assert length["cap"] == round(4096 * 0.02)


def test_a_failing_request_is_recorded_counted_and_excluded_while_the_run_goes_on(
    tmp_path: Path, sidecar: SidecarProcess
) -> None:
    ds = tmp_path / "chats.jsonl"
    ds.write_text(
        "\n".join(json.dumps({"prompt": p, "max_tokens": 8}) for p in ["hi", "FAIL now", "ok", "fine"])
    )
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"tasks:\n  - task: lm-arena-chat\n    weight: 1\n    dataset: {ds}\n")
    fake = ThreadedFake(token_s=0.001, batch_cap=4)
    try:
        rc = _run(fake, sidecar, tmp_path / "out", "--mix", str(mix), "--requests", "8", "--no-tokenize")
    finally:
        fake.close()
    assert rc == 0
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    (phase,) = data["phases"]
    assert (phase["ok"], phase["failed"], phase["errors"]) == (6, 2, {"HTTP 500": 2})
    assert data["meta"]["prompt_length_method"].startswith("heuristic")
    rows = list(csv.DictReader((tmp_path / "out" / "requests.csv").open()))
    assert sum(1 for r in rows if r["error"].startswith("HTTP 500")) == 2


def test_an_unreachable_server_fails_before_the_run_with_the_url_and_flag(
    tmp_path: Path, sidecar: SidecarProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    rc = main(["loadgen", "run", "--server-url", url, "--sidecar-url", sidecar.url, "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"cannot reach {url}" in err and "--server-url" in err
    assert not (tmp_path / "results.json").exists()


def test_an_unknown_task_in_a_mix_names_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mix = tmp_path / "m.yaml"
    mix.write_text("tasks:\n  - task: gpqa\n  - task: poetry\n")
    assert main(["loadgen", "run", "--mix", str(mix), "--quiet"]) == 2
    assert f"{mix}:3: field 'tasks[1].task': unknown task 'poetry'" in capsys.readouterr().err


def test_a_concurrency_sweep_writes_one_point_per_level_and_the_batch_plot(
    tmp_path: Path, sidecar: SidecarProcess
) -> None:
    fake = ThreadedFake(token_s=0.002, batch_cap=64)
    try:
        rc = main([
            "loadgen", "sweep", "--mix", "study-llm", "--server-url", fake.url, "--sidecar-url", sidecar.url,
            "--otlp-endpoint", "", "--scale", "0.02", "--energy-wait-s", "0", "--quiet",
            "--concurrency", "1,4", "--requests", "16", "--out", str(tmp_path),
        ])  # fmt: skip
    finally:
        fake.close()
    assert rc == 0
    points = json.loads((tmp_path / "sweep.json").read_text())["points"]
    assert [p["batch"] for p in points] == [1, 4]
    assert all(p["j_per_token"] > 0 and p["failed"] == 0 for p in points)
    assert points[1]["throughput_tokens_per_s"] > points[0]["throughput_tokens_per_s"]
    assert (tmp_path / "j_per_token_vs_batch.png").stat().st_size > 1000
    assert (tmp_path / "concurrency-4" / "results.json").exists()
    assert main(["loadgen", "compare", str(tmp_path / "concurrency-4"), str(tmp_path / "concurrency-4")]) == 0


def test_a_batch_cap_sweep_restarts_the_server_per_cap_and_uses_the_cap_as_b(
    tmp_path: Path, sidecar: SidecarProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vLLM launcher is replaced by the fake server (a real restart per cap is ~45 s on CPU)."""
    import contextlib
    from collections.abc import Iterator
    from types import SimpleNamespace
    from typing import Any

    import loadgen.sweep

    started: list[int] = []

    @contextlib.contextmanager
    def fake_vllm(model: str, cap: int, vllm_args: str, meter: str, log_dir: Path) -> Iterator[Any]:
        started.append(cap)
        server = ThreadedFake(token_s=0.002, batch_cap=cap)
        try:
            yield SimpleNamespace(
                vllm_url=server.url, sidecar_url=sidecar.url, ports={"otlp": sidecar.otlp_port}
            )
        finally:
            server.close()

    monkeypatch.setattr(loadgen.sweep, "_vllm", fake_vllm)
    rc = main([
        "loadgen", "sweep", "--mix", "study-llm", "--batch-caps", "2,8", "--scale", "0.02",
        "--requests", "24", "--energy-wait-s", "0", "--quiet", "--out", str(tmp_path),
        "--min-window-s", "0.01",
    ])  # fmt: skip
    assert rc == 0 and started == [2, 8]
    points = json.loads((tmp_path / "sweep.json").read_text())["points"]
    assert [(p["kind"], p["batch"]) for p in points] == [("batch-cap", 2), ("batch-cap", 8)]
    for p in points:
        data = json.loads((tmp_path / f"batch-cap-{p['batch']}" / "results.json").read_text())
        assert data["phases"][0]["batch_cap"] == p["batch"]
        assert data["config"]["arrivals"] == "all" and data["phases"][0]["failed"] == 0
    assert (tmp_path / "j_per_token_vs_batch.png").exists()
