"""sidecar.malloc_tune: glibc's thresholds fixed, unless the operator chose them."""

from __future__ import annotations

import ctypes
import platform

import pytest

from sidecar.malloc_tune import MMAP_THRESHOLD_BYTES, tune_malloc

_GLIBC = platform.libc_ver()[0] == "glibc"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd")] + [
        (n, ctypes.c_size_t) for n in ("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


def _mapped_bytes() -> int:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblkhd)


@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_MMAP_THRESHOLD_": "1000000"},
        {"MALLOC_TRIM_THRESHOLD_": "0"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1000000"},
    ],
)
def test_settings_the_operator_chose_are_left_alone(env: dict[str, str]) -> None:
    assert tune_malloc(env) is False


@pytest.mark.skipif(not _GLIBC, reason="mallopt is glibc's")
def test_on_glibc_a_big_block_gets_its_own_mapping_even_after_a_bigger_one_was_freed() -> None:
    """glibc would raise its mmap threshold to 24 MiB on that free and put the 12 MiB block in the heap
    (where, once freed, it can stay in the process); fixed, the block is mapped and unmapped on its own.
    (glibc serves any size from a free heap chunk first: 12 MiB is more than a test process has free.)"""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    assert tune_malloc({}) is True
    libc.free(libc.malloc(24 << 20))
    before = _mapped_bytes()
    block = libc.malloc(12 << 20)
    try:
        assert _mapped_bytes() - before >= 12 << 20 > MMAP_THRESHOLD_BYTES
    finally:
        libc.free(block)
    assert _mapped_bytes() == before  # and its pages went back to the kernel on free


@pytest.mark.skipif(not _GLIBC, reason="malloc_trim is glibc's")
def test_trim_gives_freed_heap_back_on_glibc() -> None:
    from sidecar.malloc_tune import trim

    blocks = [bytearray(1000) for _ in range(20_000)]  # ~20 MB of small heap blocks, then freed
    del blocks
    assert isinstance(trim(), bool)  # True if pages went back; never raises


def test_the_sidecar_trims_freed_heap_every_two_seconds_of_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar import app
    from sidecar.config import SidecarConfig
    from sidecar.wiring import build_sidecar

    trims: list[float] = []
    now = [0.0]
    monkeypatch.setattr(app.malloc_tune, "trim", lambda: trims.append(now[0]) or True)
    config = SidecarConfig(meter="sim", ledger_path="", otlp_port=0, plugin_port=0, hook_port=0)
    sidecar = build_sidecar(config, clock=lambda: now[0])
    for _ in range(60):  # 7.5 s of ticks 0.125 s apart
        now[0] += 0.125
        sidecar._tick_job()
    assert trims == [2.0, 4.0, 6.0]
