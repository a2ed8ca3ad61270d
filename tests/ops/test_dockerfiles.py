"""The Dockerfiles, checked statically: paths they copy exist, each takes its base image as the
BASE build argument, the sidecar image stays slim and non-root and agrees with the chart.
tests/ops/test_images.py builds the sidecar image and starts it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.ops.conftest import CHART, REPO

DOCKER = REPO / "deploy" / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_there_are_sidecar_diffusion_and_vllm_plugin_dockerfiles() -> None:
    names = [p.name for p in DOCKERFILES]
    assert names == ["diffusion.Dockerfile", "sidecar.Dockerfile", "vllm-plugin.Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.stem)
def test_every_copied_path_exists_in_the_build_context(path: Path) -> None:
    for word, args in _instructions(path):
        if word != "COPY" or "--from=" in args:
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        matched = {s: list(REPO.glob(s)) for s in sources}
        assert any(matched.values()), f"{path.name}: COPY {args}: nothing to copy"
        for source, hits in matched.items():
            # README.m[d]: the optional-file idiom (a pattern may match nothing if another source does)
            assert hits or any(ch in source for ch in "*?["), f"{path.name}: {source} does not exist"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.stem)
def test_each_dockerfile_has_its_own_dockerignore(path: Path) -> None:
    assert path.with_name(path.name + ".dockerignore").is_file()


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.stem)
def test_each_dockerfile_takes_its_base_image_as_a_build_argument(path: Path) -> None:
    steps = _instructions(path)
    assert any(word == "ARG" and args.startswith("BASE=") for word, args in steps), path.name
    assert all(args.split()[0] == "${BASE}" for word, args in steps if word == "FROM"), path.name


def test_sidecar_image_is_slim_non_root_and_runs_the_jouletrace_command() -> None:
    steps = _instructions(DOCKER / "sidecar.Dockerfile")
    bases = [args.split()[0] for word, args in steps if word == "FROM"]
    assert bases == ["${BASE}", "${BASE}"]
    assert ("ARG", "BASE=python:3.11-slim") in steps
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "['optional-dependencies']['sidecar']" in runs and "torch must not be in the sidecar image" in runs
    user = [args for word, args in steps if word == "USER"][-1]
    uid = int(user.split(":")[0])
    assert uid != 0
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    chart_uid = chart_values["sidecar"]["securityContext"]["runAsUser"]
    assert chart_uid == uid, "chart and image disagree on the user"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert [args for word, args in steps if word == "ENTRYPOINT"] == ['["jouletrace"]']
    assert scripts["jouletrace"] == "sidecar.cli:main"


def test_vllm_image_is_upstreams_with_our_layer_only() -> None:
    steps = _instructions(DOCKER / "vllm-plugin.Dockerfile")
    assert [a for w, a in steps if w == "FROM"] == ["${BASE}"]
    assert ("ARG", "BASE=vllm/vllm-openai:${VLLM_VERSION}") in steps
    assert all("--no-deps" in a for w, a in steps if w == "RUN" and "install" in a)
    assert not [a for w, a in steps if w == "ENTRYPOINT"], "keep upstream's entrypoint (vllm serve)"
