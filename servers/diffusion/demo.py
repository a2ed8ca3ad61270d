"""``jouletrace diffusion demo``: a few images and a short video, with their joules, on this CPU.

Builds the tiny pipelines (cached where ``jouletrace models build`` puts them:
``$JOULETRACE_MODELS_DIR``, default ``~/.cache/jouletrace/models``), starts the sidecar
(``cpu-model`` meter: the joules are an ESTIMATE from CPU utilization, not a measurement)
and the diffusion server as
real processes, sends four concurrent images (one batch), one image alone and
two concurrent videos, waits for each request's final energy record and
prints it. Outputs are written to ``--out``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from servers.ports import free_port

__all__ = ["run_demo"]

_EXT = {"image/png": "png", "video/mp4": "mp4", "image/gif": "gif"}


def _http(url: str, body: Any = None, timeout_s: float = 120.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def _wait(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if _http(url, timeout_s=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


def _final(sidecar: str, request_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = _http(f"{sidecar}/v1/requests/{request_id}", timeout_s=5)
        if status == 200 and body.get("final"):
            return dict(body)
        time.sleep(0.3)
    raise RuntimeError(f"no final energy record for {request_id}")


def _commands(
    image_dir: Path, video_dir: Path, otlp: int, side_port: int, port: int
) -> tuple[list[str], list[str]]:
    """The sidecar's and the diffusion server's command lines (this interpreter, local ports)."""
    py = sys.executable
    side_argv = [py, "-m", "sidecar.cli", "sidecar", "--meter", "cpu-model", "--host", "127.0.0.1"]
    side_argv += ["--otlp-port", str(otlp), "--port", str(side_port), "--ledger-path", ""]
    side_argv += ["--settle-s", "1", "--fit-warmup-ticks", "25", "--log-level", "warning"]
    serve_argv = [py, "-m", "servers.diffusion", "serve", "--host", "127.0.0.1", "--port", str(port)]
    serve_argv += [
        "--model",
        str(image_dir),
        "--model",
        str(video_dir),
        "--otlp-endpoint",
        f"127.0.0.1:{otlp}",
    ]
    serve_argv += ["--max-batch-size", "4", "--max-wait-ms", "300", "--log-level", "warning"]
    return side_argv, serve_argv


def _send(base: str) -> list[tuple[int, Any]]:
    """A warm-up, then 4 images twice (batched), one alone, and 2 videos; their answers."""
    image = {"prompt": "a lighthouse at dusk", "size": "64x64", "steps": 8}
    video = {"prompt": "waves on rocks", "size": "64x64", "num_frames": 9, "steps": 8, "fps": 8}
    img_url, vid_url = f"{base}/v1/images/generations", f"{base}/v1/videos/generations"
    with ThreadPoolExecutor(4) as pool:
        _http(img_url, image)  # warm-up of both batch shapes (kernel set-up), not shown
        list(pool.map(lambda k: _http(img_url, {**image, "seed": k}), range(4)))
        answers = list(pool.map(lambda k: _http(img_url, {**image, "seed": k}), range(4)))
        answers.append(_http(img_url, {**image, "seed": 9}))
        answers += list(pool.map(lambda k: _http(vid_url, {**video, "seed": k}), range(2)))
    return answers


def _show(answers: list[tuple[int, Any]], side: str, out: Path) -> int:
    """Write each output under ``out`` and print its batch and energy record; exit code."""
    print(f"{'request':<14} {'batch':>9} {'J (estimate)':>13} {'per unit':>22}  file")
    for status, body in answers:
        if status != 200:
            print(f"request failed: {status} {body}")
            return 1
        rec = _final(side, body["id"])
        item = body["data"][0]
        path = out / f"{body['id'][:12]}.{_EXT[item['mime_type']]}"
        path.write_bytes(base64.b64decode(item["b64_json"]))
        per = f"{rec['joules_per_output_unit']:.2f} J/{rec['unit']}"
        if rec["unit"] == "video":
            per += f", {rec['energy_j'] / float(rec['attributes']['video_frames']):.2f} J/frame"
        batch = f"#{body['batch']['id'].rsplit('-', 1)[-1]} x{body['batch']['size']}"
        print(f"{body['id'][:12]:<14} {batch:>9} {rec['energy_j']:>13.2f} {per:>22}  {path}")
    print("Joules are a cpu-model ESTIMATE (CPU utilization x a 10-65 W envelope), not a measurement.")
    return 0


def run_demo(out: Path, models_dir: Path) -> int:
    """Run the demo; returns a process exit code."""
    from servers.models.diffusion import BUILDERS
    from servers.models.video import BUILDERS as VIDEO_BUILDERS

    image_dir = BUILDERS["image"](models_dir / "tiny-image")
    video_dir = VIDEO_BUILDERS["video"](models_dir / "tiny-video")
    out.mkdir(parents=True, exist_ok=True)
    otlp, side_port, port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULETRACE_")}
    env["JOULETRACE_PLUGIN_PORT"] = "0"  # no vLLM in this demo
    logs = Path(tempfile.mkdtemp(prefix="jouletrace-diffusion-demo-"))
    side_argv, serve_argv = _commands(image_dir, video_dir, otlp, side_port, port)
    with (logs / "sidecar.log").open("wb") as slog, (logs / "server.log").open("wb") as dlog:
        sidecar = subprocess.Popen(side_argv, env=env, stdout=slog, stderr=subprocess.STDOUT)
        server = subprocess.Popen(serve_argv, env=env, stdout=dlog, stderr=subprocess.STDOUT)
    side, base = f"http://127.0.0.1:{side_port}", f"http://127.0.0.1:{port}"
    try:
        _wait(f"{side}/readyz", sidecar, 60)
        _wait(f"{base}/health", server, 180)
        answers = _send(base)
        return _show(answers, side, out)
    finally:
        for proc in (server, sidecar):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
