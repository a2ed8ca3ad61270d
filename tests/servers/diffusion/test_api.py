"""The HTTP API on a real uvicorn server with a fake pipeline: bad input, full queue, disconnects, faults."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from servers.diffusion.app import ServerSettings, make_app
from servers.diffusion.batcher import Batch
from servers.diffusion.shapes import Limits
from tests.servers.diffusion.procs import http
from tests.support import free_port


class FakeRunner:
    """Serves 'img' and 'vid'; returns arrays; 'boom' prompts fail their batch; ``gate`` holds calls."""

    def __init__(self) -> None:
        self.models = {"image": "img", "video": "vid"}
        self.gate = threading.Event()
        self.gate.set()
        self.seen: list[str] = []

    def __call__(self, batch: Batch) -> list[Any]:
        import numpy as np

        self.gate.wait(10)
        self.seen += [j.spec.prompt for j in batch.jobs]
        if any(j.spec.prompt == "boom" for j in batch.jobs):
            raise RuntimeError("CUDA error: an illegal memory access was encountered (fake)")
        shape = batch.shape
        if shape.kind == "video":
            return [np.zeros((shape.frames, shape.height, shape.width, 3)) for _ in range(batch.items)]
        return [np.zeros((shape.height, shape.width, 3)) for _ in range(batch.items)]


class Served:
    def __init__(self, url: str, runner: FakeRunner) -> None:
        self.url = url
        self.runner = runner

    def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        return http("POST", f"{self.url}{path}", body, timeout_s=20, headers=headers)


@contextlib.contextmanager
def serving(settings: ServerSettings) -> Iterator[Served]:
    """The app on a real uvicorn server in a thread, with a fake pipeline."""
    runner = FakeRunner()
    port = free_port()
    config = uvicorn.Config(make_app(runner, settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", runner)
    finally:
        runner.gate.set()
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def served() -> Iterator[Served]:
    limits = Limits(max_n=4, max_steps=50, max_frames=33, max_side_px=256)
    with serving(ServerSettings(limits=limits, max_batch_size=4, max_wait_ms=20, max_queue_items=4)) as s:
        yield s


IMG = "/v1/images/generations"
VID = "/v1/videos/generations"
OK_IMAGE = {"prompt": "a cat", "size": "64x64", "steps": 4}
OK_VIDEO = {"prompt": "a cat", "size": "64x64", "steps": 4, "num_frames": 9}


@pytest.mark.parametrize(
    ("path", "change", "field", "limit"),
    [
        (IMG, {"size": "100x64"}, "size", "multiple of 16"),
        (IMG, {"size": "4096x4096"}, "size", "256 px"),
        (IMG, {"size": "big"}, "size", "WIDTHxHEIGHT"),
        (IMG, {"steps": 0}, "steps", "1..50"),
        (IMG, {"steps": 10_000}, "steps", "1..50"),
        (IMG, {"prompt": "   "}, "prompt", "non-empty"),
        # probe 10: a lone surrogate is valid JSON; the tokenizer then failed the whole batch (500 x 4)
        (IMG, {"prompt": "\ud800 barn"}, "prompt", "lone surrogate"),
        (IMG, {"size": "\uff13\uff12x32"}, "size", "WIDTHxHEIGHT"),  # full-width digits
        (IMG, {"size": "32x32\n"}, "size", "WIDTHxHEIGHT"),
        (IMG, {"n": 5}, "n", "1..4"),
        (IMG, {"guidance": -1}, "guidance", "0..30"),
        (IMG, {"response_format": "url"}, "response_format", "--output-dir"),
        (IMG, {"model": "sd-xl"}, "model", "'img'"),
        (VID, {"num_frames": 81}, "num_frames", "1..33"),
        (VID, {"num_frames": 10}, "num_frames", "4k+1"),
        (VID, {"fps": 0}, "fps", "1..60"),
        (VID, {"format": "avi"}, "format", "mp4"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field_and_its_limit(
    served: Served, path: str, change: dict[str, Any], field: str, limit: str
) -> None:
    base = OK_IMAGE if path == IMG else OK_VIDEO
    status, body, _ = served.post(path, {**base, **change})
    assert status in (400, 404), body
    assert body["error"]["param"] == field
    assert body["error"]["message"].startswith(f"{field}:") and limit in body["error"]["message"]
    assert served.runner.seen == []


def test_a_body_that_is_not_json_is_a_400(served: Served) -> None:
    status, body, _ = served.post(IMG, "not an object")
    assert status == 400 and body["error"]["param"] == "body"


def test_a_body_nested_deeper_than_the_parser_goes_is_a_400_not_a_500(served: Served) -> None:
    """Probe 10: a RecursionError from the JSON parser escaped as a bare 500."""
    deep = b'{"prompt": "x", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    json_type = {"content-type": "application/json"}
    req = urllib.request.Request(f"{served.url}{IMG}", data=deep, headers=json_type)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=20)
    assert refused.value.code == 400 and json.loads(refused.value.read())["error"]["param"] == "body"
    assert served.runner.seen == []


def test_good_requests_return_images_and_videos_with_their_batch(served: Served) -> None:
    status, body, headers = served.post(IMG, {**OK_IMAGE, "n": 2})
    assert status == 200 and len(body["data"]) == 2 and body["data"][0]["mime_type"] == "image/png"
    assert body["id"].startswith("img-") and headers["x-request-id"] == body["id"]
    assert body["batch"]["size"] == 2
    batch = body["batch"]  # the pipeline call's own interval, for timing the batch as the study does
    assert 0 < batch["start_unix_s"] <= batch["end_unix_s"] <= time.time()
    status, body, _ = served.post(VID, {**OK_VIDEO, "format": "gif"})
    assert status == 200 and body["data"][0]["mime_type"] == "image/gif" and body["data"][0]["b64_json"]


def test_the_clients_x_request_id_is_the_request_id_when_it_is_a_safe_name(served: Served) -> None:
    status, body, headers = served.post(IMG, OK_IMAGE, {"X-Request-Id": "lg-text-to-image-000007"})
    assert status == 200 and body["id"] == headers["x-request-id"] == "lg-text-to-image-000007"
    for unsafe in ("../../etc/passwd", "a b", "x" * 129, ".hidden"):  # it names output files too
        status, body, headers = served.post(VID, OK_VIDEO, {"X-Request-Id": unsafe})
        assert status == 200 and body["id"].startswith("vid-") and headers["x-request-id"] == body["id"]


@contextlib.contextmanager
def _queue_full(served: Served) -> Iterator[None]:
    """A batch of 4 held in the pipeline and 4 more queued (the queue's limit) while the body runs;
    then both are let through and answered 200."""
    served.runner.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(served.post, IMG, {**OK_IMAGE, "n": 4})
        time.sleep(0.3)
        queued = pool.submit(served.post, IMG, {**OK_IMAGE, "n": 4, "size": "128x128"})
        time.sleep(0.3)
        try:
            yield
        finally:
            served.runner.gate.set()
        assert running.result()[0] == 200 and queued.result()[0] == 200


def test_an_x_request_id_that_ran_is_not_taken_again_one_refused_with_429_is(served: Served) -> None:
    assert served.post(IMG, OK_IMAGE, {"X-Request-Id": "r1"})[1]["id"] == "r1"
    status, body, headers = served.post(IMG, OK_IMAGE, {"X-Request-Id": "r1"})  # the sidecar has r1 final
    assert status == 200 and body["id"].startswith("img-") and headers["x-request-id"] == body["id"]
    with _queue_full(served):
        assert served.post(IMG, OK_IMAGE, {"X-Request-Id": "r2"})[0] == 429
    assert served.post(IMG, OK_IMAGE, {"X-Request-Id": "r2"})[1]["id"] == "r2"  # nothing ran under it


def test_a_full_queue_answers_429_with_retry_after(served: Served) -> None:
    with _queue_full(served):
        status, body, headers = served.post(IMG, OK_IMAGE)
        assert status == 429 and int(headers["retry-after"]) >= 1, body


def _post_and_hang_up(url: str, path: str, body: dict[str, Any]) -> None:
    host, port = url.removeprefix("http://").split(":")
    raw = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(raw)}\r\n\r\n"
        sock.sendall(head.encode() + raw)
        time.sleep(0.3)


def test_a_client_that_disconnects_while_queued_is_removed_and_never_runs(served: Served) -> None:
    served.runner.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(served.post, IMG, {**OK_IMAGE, "prompt": "kept", "n": 4})
        time.sleep(0.3)
        _post_and_hang_up(served.url, IMG, {**OK_IMAGE, "prompt": "gone", "size": "128x128"})
        time.sleep(0.3)
        served.runner.gate.set()
        assert running.result()[0] == 200
    time.sleep(0.3)
    assert served.runner.seen == ["kept"]
    _, metrics, _ = http("GET", f"{served.url}/metrics")
    assert 'jouletrace_diffusion_requests_total{kind="image",status="cancelled"} 1.0' in metrics


def test_an_exception_in_a_batch_fails_only_its_requests_with_500_and_the_server_stays_up(
    served: Served,
) -> None:
    with ThreadPoolExecutor(3) as pool:
        bad = pool.submit(served.post, IMG, {**OK_IMAGE, "prompt": "boom"})
        mate = pool.submit(served.post, IMG, {**OK_IMAGE, "prompt": "same batch"})
        other = pool.submit(served.post, VID, OK_VIDEO)
        (s1, b1, _), (s2, _, _), (s3, _, _) = bad.result(), mate.result(), other.result()
    assert (s1, s2, s3) == (500, 500, 200)
    assert "illegal memory access" in b1["error"]["message"]
    assert served.post(IMG, OK_IMAGE)[0] == 200
    status, health, _ = http("GET", f"{served.url}/health")
    assert status == 200 and health["status"] == "ok"


def test_response_format_url_writes_the_file_and_answers_a_file_url(tmp_path: Path) -> None:
    with serving(ServerSettings(output_dir=tmp_path)) as s:
        status, body, _ = s.post(VID, {**OK_VIDEO, "response_format": "url"})
    assert status == 200, body
    url = body["data"][0]["url"]
    assert url.startswith("file://") and Path(url.removeprefix("file://")).stat().st_size > 0
