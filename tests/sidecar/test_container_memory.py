"""The container's memory limit read from a cgroup tree (v2, v1, both), and the OTLP limit from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.container_memory import UnreadableLimit, container_limit_mb, otlp_memory_limit_mb

MIB = 1024 * 1024


def _tree(tmp_path: Path, self_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup mount with ``files`` (paths under it) and a /proc/self/cgroup saying ``self_cgroup``."""
    mount = tmp_path / "cgroup"
    for rel, text in files.items():
        (mount / rel).parent.mkdir(parents=True, exist_ok=True)
        (mount / rel).write_text(text)
    mount.mkdir(exist_ok=True)
    proc = tmp_path / "self_cgroup"
    proc.write_text(self_cgroup)
    return mount, proc


def test_a_v2_container_in_its_own_cgroup_namespace_reads_the_limit_at_the_root(tmp_path: Path) -> None:
    mount, proc = _tree(tmp_path, "0::/\n", {"memory.max": f"{512 * MIB}\n"})
    assert container_limit_mb(mount, proc) == 512.0


def test_v2_takes_the_lowest_limit_from_the_process_cgroup_up(tmp_path: Path) -> None:
    """A pod's limit binds its containers: the container's own says max, the pod's 1 GiB."""
    files = {
        "kubepods/pod1/memory.max": f"{1024 * MIB}\n",
        "kubepods/pod1/c1/memory.max": "max\n",
        "kubepods/memory.max": "max\n",
    }
    mount, proc = _tree(tmp_path, "0::/kubepods/pod1/c1\n", files)
    assert container_limit_mb(mount, proc) == 1024.0
    (mount / "kubepods/pod1/c1/memory.max").write_text(f"{256 * MIB}\n")
    assert container_limit_mb(mount, proc) == 256.0


def test_no_limit_anywhere_is_none(tmp_path: Path) -> None:
    mount, proc = _tree(tmp_path, "0::/\n", {"memory.max": "max\n"})
    assert container_limit_mb(mount, proc) is None
    assert container_limit_mb(tmp_path / "absent", tmp_path / "absent_too") is None


def test_v1_reads_the_memory_controller_and_its_unlimited_value_is_none(tmp_path: Path) -> None:
    mount, proc = _tree(tmp_path, "4:memory:/\n", {"memory/memory.limit_in_bytes": "9223372036854771712\n"})
    assert container_limit_mb(mount, proc) is None
    (mount / "memory/memory.limit_in_bytes").write_text(f"{300 * MIB}\n")
    assert container_limit_mb(mount, proc) == 300.0


def test_a_hybrid_host_uses_v1_when_the_v2_tree_has_no_limit_file(tmp_path: Path) -> None:
    """As on this machine: the memory controller on v1, an empty unified hierarchy (0::/)."""
    files = {"memory/docker/abc/memory.limit_in_bytes": f"{200 * MIB}\n"}
    mount, proc = _tree(tmp_path, "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n", files)
    assert container_limit_mb(mount, proc) == 200.0


def test_a_limit_file_that_is_there_but_unreadable_or_garbled_raises_not_no_limit(tmp_path: Path) -> None:
    """Not knowing the limit is not having none: the caller keeps the limit it had. (A parent's
    limit is not taken for the unreadable own one either.)"""
    files = {"kubepods/memory.max": f"{1024 * MIB}\n", "kubepods/c1/memory.max": "lots\n"}
    mount, proc = _tree(tmp_path, "0::/kubepods/c1\n", files)
    with pytest.raises(UnreadableLimit, match="'lots' is not a number of bytes"):
        container_limit_mb(mount, proc)
    (mount / "kubepods/c1/memory.max").write_text("\u00b2\n")  # a digit to str.isdigit, not to int()
    with pytest.raises(UnreadableLimit):
        container_limit_mb(mount, proc)
    (mount / "kubepods/c1/memory.max").unlink()
    (mount / "kubepods/c1/memory.max").mkdir()  # there, but no file to read (as a permission error)
    with pytest.raises(UnreadableLimit, match=r"memory\.max"):
        container_limit_mb(mount, proc)


def test_zero_is_no_limit(tmp_path: Path) -> None:
    mount, proc = _tree(tmp_path, "0::/\n", {"memory.max": "0\n"})
    assert container_limit_mb(mount, proc) is None


def test_v1_finds_a_memory_controller_mounted_with_others(tmp_path: Path) -> None:
    files = {"cpu,memory/docker/x/memory.limit_in_bytes": f"{128 * MIB}\n"}
    mount, proc = _tree(tmp_path, "4:cpu,memory:/docker/x\n", files)
    assert container_limit_mb(mount, proc) == 128.0


def test_a_cgroup_path_never_leads_above_the_mount(tmp_path: Path) -> None:
    """A path with .. parts (no kernel writes one) is read inside the mount, not beside it."""
    mount, proc = _tree(tmp_path, "0::/../../outside\n", {"memory.max": f"{64 * MIB}\n"})
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "memory.max").write_text(f"{1 * MIB}\n")
    assert container_limit_mb(mount, proc) == 64.0


@pytest.mark.parametrize(
    ("limit_mb", "percent", "container_mb", "expected"),
    [
        (400.0, 80.0, None, 400.0),  # no container limit: the MB knob
        (400.0, 80.0, 512.0, 400.0),  # the chart's old pair: 80 % of 512 is 409.6, over 400
        (400.0, 80.0, 256.0, 204.8),  # a smaller container: the percent, under the OOM killer
        (0.0, 80.0, 1024.0, 819.2),  # the MB knob off: the container's limit alone
        (400.0, 0.0, 256.0, 400.0),  # the percent off
        (0.0, 80.0, None, 0.0),  # neither applies: no limit
        (0.0, 0.0, 512.0, 0.0),
    ],
)
def test_the_otlp_limit_is_the_lower_of_the_knobs_that_apply(
    limit_mb: float, percent: float, container_mb: float | None, expected: float
) -> None:
    assert otlp_memory_limit_mb(limit_mb, percent, container_mb) == pytest.approx(expected)
