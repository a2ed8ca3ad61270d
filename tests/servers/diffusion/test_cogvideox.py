"""The tiny CogVideoX pipeline served by the real diffusion server, next to the real sidecar.

Checks the builder (a CogVideoXPipeline folder that ``from_pretrained`` loads), that the
server serves it as the video model and batches it, that every response carries its batch's
pipeline-call interval, and that the sidecar's ``/v1/energy`` over that interval (the study's
per-timed-batch energy) matches the energy the sidecar attributed to the batch's members.
Joules are the cpu-model meter's ESTIMATE (no energy counter here).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers.diffusion.procs import final_record, http, start, start_sidecar, stop
from tests.support import free_port, wait_for

pytestmark = pytest.mark.integration

# long enough (several counter updates) that the members' ticks and the batch interval nearly coincide
VIDEO = {"prompt": "a kite over the sea", "size": "64x64", "num_frames": 9, "steps": 12, "fps": 8}


@pytest.fixture(scope="module")
def cogvideox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from servers.models.video import BUILDERS

    root = os.environ.get("JOULETRACE_MODELS_DIR")
    folder = Path(root) / "tiny-cogvideox" if root else tmp_path_factory.mktemp("models") / "tiny-cogvideox"
    return BUILDERS["cogvideox"](folder)


@pytest.fixture(scope="module")
def urls(cogvideox: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    logs = tmp_path_factory.mktemp("logs")
    otlp, side_port, server_port = free_port(), free_port(), free_port()
    # spans arrive when a batch ends: hold ticks longer than a batch takes on a busy CPU
    sidecar = start_sidecar(otlp, side_port, 20, logs / "sidecar.log")
    server_argv = ["-m", "servers.diffusion", "serve", "--host", "127.0.0.1", "--port", str(server_port)]
    server_argv += ["--model", str(cogvideox), "--otlp-endpoint", f"127.0.0.1:{otlp}"]
    server_argv += ["--max-batch-size", "2", "--max-wait-ms", "500"]
    server = start(server_argv, logs / "server.log")
    side, srv = f"http://127.0.0.1:{side_port}", f"http://127.0.0.1:{server_port}"
    try:
        wait_for(lambda: http("GET", f"{side}/readyz")[0] == 200, 60, sidecar, logs / "sidecar.log")
        wait_for(lambda: http("GET", f"{srv}/health")[0] == 200, 180, server, logs / "server.log")
        yield side, srv
    finally:
        stop(server)
        stop(sidecar)


def test_the_builder_writes_a_cogvideox_pipeline(cogvideox: Path) -> None:
    index = json.loads((cogvideox / "model_index.json").read_text())
    assert index["_class_name"] == "CogVideoXPipeline"
    assert index["transformer"][1] == "CogVideoXTransformer3DModel"


def test_served_batched_and_timed_batch_energy_matches_the_members(urls: tuple[str, str]) -> None:
    sidecar, server = urls
    status, health, _ = http("GET", f"{server}/health")
    assert status == 200 and health["models"] == {"video": "tiny-cogvideox"}
    http("POST", f"{server}/v1/videos/generations", VIDEO, timeout_s=120)  # warm-up batch
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda k: http("POST", f"{server}/v1/videos/generations", {**VIDEO, "seed": k}, 120), [1, 2]
            )
        )
    bodies = [a[1] for a in answers]
    assert [a[0] for a in answers] == [200, 200], bodies
    assert all(b["data"][0]["mime_type"] == "video/mp4" and b["data"][0]["b64_json"] for b in bodies)
    (batch,) = {json.dumps(b["batch"], sort_keys=True) for b in bodies}
    spec = json.loads(batch)
    assert spec["size"] == 2 and spec["end_unix_s"] > spec["start_unix_s"]
    members = sum(final_record(sidecar, b["id"], 60)["energy_j"] for b in bodies)
    inner = _energy(sidecar, spec["start_unix_s"], spec["end_unix_s"])
    # the members share whole counter ticks: at most the ticks that cover the batch (one update
    # period either side); the cpu-model meter also sees the rest of a busy machine in those ticks
    period_s = _update_period_s(sidecar)
    outer = _energy(sidecar, spec["start_unix_s"] - period_s, spec["end_unix_s"] + period_s)
    assert 0.9 * inner <= members <= 1.1 * outer, (inner, members, outer)


def _energy(sidecar: str, start_unix_s: float, end_unix_s: float) -> float:
    status, interval, _ = http(
        "GET", f"{sidecar}/v1/energy?start_unix_s={start_unix_s}&end_unix_s={end_unix_s}"
    )
    assert status == 200 and interval["covered"] is True
    return float(interval["energy_j"])


def _update_period_s(sidecar: str) -> float:
    with urllib.request.urlopen(f"{sidecar}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jouletrace_meter_update_period_seconds":
                return float(sample.value)
    raise AssertionError("the sidecar exports no counter update period")
