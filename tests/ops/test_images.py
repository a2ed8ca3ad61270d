"""The sidecar image, built and started for real.

No image registry is reachable here (CI neither), so the image is built with podman on a base
image made from Debian packages (scripts/build-base-image.sh: bookworm's python3 is 3.11, as in
the Dockerfile's default base python:3.11-slim), passed as the Dockerfile's BASE build argument.

``podman run`` cannot start containers on these machines (crun needs cgroup v2 or v1 only; the
kernel mounts a hybrid); the test therefore runs the image's own file system and configuration
the way a container runtime does it: its root bind-mounted read-only, tmpfs at the paths the Helm
chart mounts emptyDirs at (/tmp, /var/lib/jouletrace), /proc and /dev, then ``chroot`` as the
image's USER with exactly the image's ENV, WORKDIR and ENTRYPOINT. That checks what the pod
relies on: the entry point exists and runs as uid 65532 on a read-only root.

Build time: from nothing, this module took 8 min 18 s on a busy 2-core machine (base and image
built alone: 1 min 46 s and 1 min 9 s). podman keeps the layers: a later run took 15 s, longer
only when pyproject.toml (dependency layer) or sidecar/ (last layer) changed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers.ports import free_port
from tests.ops.conftest import REPO

pytestmark = pytest.mark.integration

BASE = "localhost/jouletrace-base:bookworm"
IMAGE = "localhost/jouletrace-sidecar:test"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The sidecar has no torch: numpy, scipy, grpcio, OTel and aiohttp on a Python 3.11 base.
# Measured: 463 MB on the Debian base (176 MB of it the base).
MAX_IMAGE_BYTES = 550 * 1000**2
MAX_ADDED_BYTES = 330 * 1000**2


def _run(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)


def _podman() -> str:
    path = shutil.which("podman")
    if path is None:
        pytest.skip("podman is not installed: scripts/install-system-deps.sh installs it (Debian, as root)")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("running the image's file system needs root and unshare (util-linux)")
    return path


@dataclass(frozen=True)
class Image:
    config: dict[str, object]
    size_bytes: int
    base_size_bytes: int


@pytest.fixture(scope="module")
def image() -> Image:
    podman = _podman()
    base = _run([str(REPO / "scripts" / "build-base-image.sh"), BASE], timeout_s=900)
    assert base.returncode == 0, base.stdout + base.stderr
    cmd = [podman, "build", "--isolation", "chroot", "--build-arg", f"BASE={BASE}"]
    if CA_BUNDLE.is_file():  # pip inside the build trusts what this machine trusts
        cmd += ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro", "--build-arg", f"PIP_CERT={CA_BUNDLE}"]
    cmd += ["-f", str(REPO / "deploy" / "docker" / "sidecar.Dockerfile"), "-t", IMAGE, str(REPO)]
    build = _run(cmd, timeout_s=1200)
    assert build.returncode == 0, f"podman build failed:\n{build.stdout[-4000:]}{build.stderr[-4000:]}"
    inspect = _run([podman, "image", "inspect", IMAGE, BASE], timeout_s=60)
    assert inspect.returncode == 0, inspect.stderr
    built, base_image = json.loads(inspect.stdout)
    return Image(built["Config"], int(built["Size"]), int(base_image["Size"]))


@pytest.fixture(scope="module")
def rootfs(image: Image) -> Iterator[Path]:
    mount = _run(["podman", "image", "mount", IMAGE], timeout_s=60)
    assert mount.returncode == 0, mount.stderr
    yield Path(mount.stdout.strip())
    _run(["podman", "image", "unmount", IMAGE], timeout_s=60)


def _container(root: Path, config: dict[str, object], args: list[str]) -> list[str]:
    """argv that runs ENTRYPOINT + args in the image as a runtime would: read-only root,
    tmpfs where the chart mounts emptyDirs, the image's USER, ENV and WORKDIR."""
    env = [str(e) for e in config.get("Env") or []]  # type: ignore[attr-defined]
    entrypoint = [str(a) for a in config.get("Entrypoint") or []]  # type: ignore[attr-defined]
    user, workdir = str(config["User"]), str(config.get("WorkingDir") or "/")
    inner = " ".join(["cd", workdir, "&&", "exec", "/usr/bin/env", "-i", *env, *entrypoint, *args])
    setup = (
        f"mount --bind {root} {root} && mount -o remount,bind,ro {root} && "
        f"mount -t tmpfs -o size=64m tmpfs {root}/tmp && mount -t tmpfs tmpfs {root}/var/lib/jouletrace && "
        f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && "
        f"exec chroot --userspec={user} {root} /bin/sh -c '{inner}'"
    )
    return ["unshare", "--mount", "--pid", "--fork", "sh", "-c", setup]


def test_the_image_is_small_non_root_and_runs_jouletrace(image: Image) -> None:
    print(f"image {image.size_bytes / 1e6:.0f} MB, base {image.base_size_bytes / 1e6:.0f} MB")
    assert image.size_bytes <= MAX_IMAGE_BYTES
    assert image.size_bytes - image.base_size_bytes <= MAX_ADDED_BYTES
    assert image.config["User"] == "65532:65532"
    assert image.config["Entrypoint"] == ["jouletrace"]


def test_help_runs_as_non_root_on_a_read_only_root(image: Image, rootfs: Path) -> None:
    probe = _run(_container(rootfs, image.config, ["sidecar", "--help"]), timeout_s=60)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert "--meter" in probe.stdout
    checks = "id -u; touch /opt/jouletrace/x 2>&1 || true; touch /var/lib/jouletrace/x && echo writable-data"
    argv = _container(rootfs, {**image.config, "Entrypoint": ["/bin/sh", "-c"]}, [f'"{checks}"'])
    shown = _run(argv, timeout_s=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "65532"
    assert "Read-only file system" in lines[1]
    assert lines[2] == "writable-data"


def test_a_short_simulated_run_serves_energy_metrics(image: Image, rootfs: Path, tmp_path: Path) -> None:
    port = free_port()
    args = ["sidecar", "--meter", "sim", "--host", "127.0.0.1", "--port", str(port), "--otlp-port", "0"]
    args += ["--fit-warmup-ticks", "20"]
    log = tmp_path / "sidecar.log"
    with log.open("w") as out:
        argv = _container(rootfs, image.config, args)
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        body = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "gen_ai_server_energy_joules_total" not in body:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    body = resp.read().decode()
            except OSError:
                pass
            time.sleep(1)
        assert "gen_ai_server_energy_joules_total" in body, log.read_text()
        assert 'energy_source="simulated"' in body
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its session: unshare, and the sidecar inside
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 0, log.read_text()
