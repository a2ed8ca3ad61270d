"""``benchmarks/diffusion_batching.py`` on the tiny image pipeline (built by the benchmark, CPU, 32x32, two
steps) at batch 1 and 2 with the cpu-model meter: it prints a row per batch size asked, in order, each
of at least two calls, with finite, positive figures that agree with the rows it saves (J/image is energy
over images, images/s images over seconds, W energy over seconds, the ratios against batch 1) and a
header that names the pipeline and meter it used."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from tests.benchmarks.bench_module import run_bench

BATCHES = [1, 2]
ARGS = ["--batch-sizes", ",".join(map(str, BATCHES)), "--min-seconds", "0", "--size", "32", "--steps", "2"]
ARGS += ["--meter", "cpu-model", "--threads", "1"]
ROW = re.compile(r" *(\d+) +(\S+) +(\S+) +(\S+) +(\S+) +(\S+) +(\d+)")


@pytest.mark.integration
def test_a_row_per_batch_size_each_agreeing_with_the_rows_it_saves(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    env = {"TMPDIR": str(tmp_path)}  # the built model
    stdout = run_bench(
        "diffusion_batching", [*ARGS, "--json", str(out)], cwd=tmp_path, env=env, timeout_s=120
    )
    saved = json.loads(out.read_text())
    meta, rows = saved["meta"], saved["rows"]
    assert (meta["pipeline"], meta["batch_sizes"], meta["meter"]) == ("tiny", "1,2", "cpu-model")

    head, meter, table, *printed = stdout.splitlines()
    assert re.fullmatch(
        rf"pipeline tiny: {meta['params'] / 1e6:.1f} M params, cpu float32, 32x32, 2 steps, CFG on; "
        r"built/loaded in \d+\.\d s",
        head,
    ), head
    assert meter == f"energy: meter {meta['energy_source']!r} ({', '.join(meta['devices'])})"
    assert table.split() == ["batch", "J/image", "vs", "b=1", "images/s", "vs", "b=1", "W", "calls"]
    assert [r["batch"] for r in rows] == BATCHES and len(printed) == len(BATCHES)

    first = rows[0]
    for line, row in zip(printed, rows, strict=True):
        m = ROW.fullmatch(line)
        assert m is not None, line
        images = row["calls"] * row["batch"]
        assert row["calls"] >= 2 and all(math.isfinite(v) and v > 0 for v in row.values())
        assert row["j_per_image"] == pytest.approx(row["energy_j"] / images)
        assert row["images_per_s"] == pytest.approx(images / row["seconds"])
        assert row["power_w"] == pytest.approx(row["energy_j"] / row["seconds"])
        assert row["j_ratio"] == pytest.approx(row["j_per_image"] / first["j_per_image"])
        assert row["speed_ratio"] == pytest.approx(row["images_per_s"] / first["images_per_s"])
        keys = ["batch", "j_per_image", "j_ratio", "images_per_s", "speed_ratio", "power_w", "calls"]
        places = [0, 3, 2, 2, 2, 1, 0]
        assert list(m.groups()) == [f"{row[k]:.{p}f}" for k, p in zip(keys, places, strict=True)]
    assert printed[0].split()[2] == printed[0].split()[4] == "1.00"  # batch 1 against itself
