"""End to end: the diffusion server and the sidecar as real processes, joined by OTLP spans.

The sidecar runs the ``cpu-model`` meter: its joules are an ESTIMATE from CPU
utilization (``energy_source="estimate"``), not a measurement. The batching
effect asserted here is the real pipeline's timing on this CPU turned into
joules by that model; the study's GPU numbers are in docs/diffusion.md.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.servers.diffusion.procs import final_record, http, start, start_sidecar, stop
from tests.support import free_port, wait_for

pytestmark = pytest.mark.integration

IMAGE = {"prompt": "a lighthouse at dusk", "size": "32x32", "steps": 4, "guidance": 7.5}
VIDEO = {"prompt": "waves on rocks", "size": "64x64", "num_frames": 9, "steps": 4, "fps": 8}


class Stack:
    """Base URLs of the running sidecar and diffusion server."""

    def __init__(self, sidecar: str, server: str) -> None:
        self.sidecar = sidecar
        self.server = server

    def image(self, **extra: Any) -> dict[str, Any]:
        status, body, _ = http("POST", f"{self.server}/v1/images/generations", {**IMAGE, **extra})
        assert status == 200, body
        return dict(body)

    def video(self, **extra: Any) -> dict[str, Any]:
        status, body, _ = http("POST", f"{self.server}/v1/videos/generations", {**VIDEO, **extra})
        assert status == 200, body
        return dict(body)

    def final_record(self, request_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        return final_record(self.sidecar, request_id, timeout_s)


@pytest.fixture(scope="module")
def stack(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("logs")
    otlp, side_port, server_port = free_port(), free_port(), free_port()
    sidecar = start_sidecar(otlp, side_port, 1, logs / "sidecar.log")
    server_argv = ["-m", "servers.diffusion", "serve", "--host", "127.0.0.1", "--port", str(server_port)]
    server_argv += ["--model", str(tiny_models["image"]), "--model", str(tiny_models["video"])]
    server_argv += ["--otlp-endpoint", f"127.0.0.1:{otlp}", "--max-batch-size", "4", "--max-wait-ms", "400"]
    server = start(server_argv, logs / "server.log")
    s = Stack(f"http://127.0.0.1:{side_port}", f"http://127.0.0.1:{server_port}")
    try:
        wait_for(lambda: http("GET", f"{s.sidecar}/readyz")[0] == 200, 60, sidecar, logs / "sidecar.log")
        wait_for(lambda: http("GET", f"{s.server}/health")[0] == 200, 120, server, logs / "server.log")
        yield s
    finally:
        stop(server)
        stop(sidecar)
        print((logs / "server.log").read_text()[-2000:], (logs / "sidecar.log").read_text()[-2000:])


def _metric_samples(text: str, name: str) -> list[tuple[str, float]]:
    return [(m.group(1), float(m.group(2))) for m in re.finditer(rf"^{name}\{{(.*)\}} (\S+)$", text, re.M)]


def test_batched_requests_get_final_estimated_energy_that_conserves_and_batching_saves_energy(
    stack: Stack,
) -> None:
    with ThreadPoolExecutor(8) as pool:
        # warm-up: the first call of each batch shape pays kernel set-up; not compared
        warm = [stack.image(), *pool.map(lambda k: stack.image(seed=k), range(4)), stack.video()]
        # three times: four single-image batches one after another, then four concurrent requests (one batch)
        singles: list[dict[str, Any]] = []
        grouped: list[dict[str, Any]] = []
        for _ in range(3):
            singles += [stack.image(seed=k) for k in range(4)]
            grouped += list(pool.map(lambda k: stack.image(seed=k), range(4)))
        # a mixed burst: images with n=2 and three videos, all concurrent
        burst = [pool.submit(stack.image, n=2, seed=9) for _ in range(2)]
        burst += [pool.submit(stack.video, seed=k) for k in range(3)]
        mixed = [f.result() for f in burst]
    assert [r["batch"]["size"] for r in singles] == [1] * 12
    assert [r["batch"]["size"] for r in grouped] == [4] * 12
    assert len({r["batch"]["id"] for r in grouped}) == 3
    assert max(r["batch"]["size"] for r in mixed if r["id"].startswith("vid-")) > 1
    assert all(len(r["data"]) == 2 for r in mixed if r["id"].startswith("img-"))

    records = {r["id"]: stack.final_record(r["id"]) for r in [*singles, *grouped, *mixed]}
    for rec in records.values():
        assert rec["energy_j"] > 0 and rec["energy_source"] == "estimate", rec
        assert rec["unit"] in ("image", "video") and rec["task"] in ("text-to-image", "text-to-video")
    assert records[mixed[0]["id"]]["output_units"] == 2.0

    # the batching effect (estimated joules): a batch of 4 costs less per image than 4 batches of 1
    # (medians over three rounds: a 2-core machine's timings jump 2x when anything else runs)
    single_j = statistics.median(records[r["id"]]["energy_j"] for r in singles)
    grouped_j = statistics.median(records[r["id"]]["energy_j"] for r in grouped)
    print(f"cpu-model ESTIMATE: {single_j:.3f} J/image alone, {grouped_j:.3f} J/image in a batch of 4")
    assert grouped_j < single_j
    # members of one homogeneous batch share its energy equally (split by work units)
    shares = [records[r["id"]]["energy_j"] for r in grouped[:4]]
    assert max(shares) - min(shares) <= 1e-9 * max(shares)

    status, text, _ = http("GET", f"{stack.sidecar}/metrics")
    assert status == 200
    # conservation: the sidecar's own check, and every request joule is in the denoise counter
    (_, error_j), *_ = _metric_samples(text, "jouletrace_conservation_error_joules")
    denoise_j = sum(
        v
        for labels, v in _metric_samples(text, "gen_ai_server_energy_joules_total")
        if 'jouletrace_phase="denoise"' in labels
    )
    assert error_j < 1e-6
    records.update({r["id"]: stack.final_record(r["id"]) for r in warm})
    assert denoise_j == pytest.approx(sum(rec["energy_j"] for rec in records.values()), rel=1e-9)
    units = {
        re.search(r'jouletrace_unit="(\w+)"', labels).group(1)  # type: ignore[union-attr]
        for labels, _ in _metric_samples(text, "gen_ai_server_energy_per_output_unit_joules_count")
    }
    assert {"image", "video", "frame", "video_second"} <= units
    status, server_metrics, _ = http("GET", f"{stack.server}/metrics")
    assert "jouletrace_diffusion_batch_size_bucket" in server_metrics


def test_a_request_sent_with_an_x_request_id_has_its_record_under_that_id(stack: Stack) -> None:
    """After the conservation test (it sums every request of this module's stack)."""
    status, body, headers = http(
        "POST", f"{stack.server}/v1/images/generations", IMAGE, headers={"X-Request-Id": "e2e-img-000001"}
    )
    assert status == 200 and body["id"] == headers["x-request-id"] == "e2e-img-000001", body
    record = stack.final_record("e2e-img-000001")
    assert record["energy_j"] > 0 and record["task"] == "text-to-image"


def test_a_pipeline_call_longer_than_settle_s_is_waited_for_and_its_record_has_all_of_its_work(
    stack: Stack,
) -> None:
    """Probe 10: the batch span comes when the call ends; a call longer than the sidecar's ``settle_s``
    (1 s here) had its work before the sealed edge clipped (a 7.6 s call's record: 1.06 busy seconds,
    69 J of ~543 J). The server's batch-start span now holds sealing at the call's start."""
    body = stack.image(size="128x128", steps=24, seed=7)
    batch = body["batch"]
    call_s = batch["end_unix_s"] - batch["start_unix_s"]
    assert call_s > 2.0, f"the call took {call_s:.2f} s: not longer than settle_s with a margin"
    record = stack.final_record(body["id"], timeout_s=60)
    assert "energy_unknown" not in record["attributes"], record["attributes"]
    assert record["busy_s"] == pytest.approx(call_s, rel=0.1)
