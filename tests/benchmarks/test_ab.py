"""benchmarks/ab.py: two versions of the code run in turn, the last line's figure compared per pair."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.benchmarks.bench_module import load_bench

bench = load_bench("ab")


@pytest.mark.parametrize(
    ("output", "label", "value"),
    [
        ("warm-up\nspans/s 13224\n", "spans/s", 13224.0),
        ("rss MB 182\n\n", "rss MB", 182.0),
        ("proxy idle 50000 tick ms 0.270 (baseline 51.639)", "proxy idle 50000 tick ms", 0.27),
        ("cpu s per 1000 tokens 3.2e-03", "cpu s per 1000 tokens", 0.0032),
    ],
)
def test_the_figure_is_the_last_lines_last_number_before_a_parenthesis(
    output: str, label: str, value: float
) -> None:
    assert bench.last_figure(output) == bench.Figure(label, value)


@pytest.mark.parametrize("output", ["", "done\n", "42\n"])
def test_a_last_line_without_a_labelled_number_is_an_error_that_shows_it(output: str) -> None:
    with pytest.raises(ValueError, match=r"nothing|figure"):
        bench.last_figure(output)


def test_runs_alternate_abba_so_a_drift_falls_on_both_alike() -> None:
    assert bench.order(3) == ["base", "candidate", "candidate", "base", "base", "candidate"]


def test_each_pair_gives_the_candidates_figure_over_the_bases() -> None:
    assert bench.ratios([100.0, 200.0], [110.0, 180.0]) == pytest.approx([1.1, 0.9])
    with pytest.raises(ValueError, match="pair"):
        bench.ratios([100.0], [])
    with pytest.raises(ValueError, match="0"):
        bench.ratios([0.0], [1.0])


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True)


@pytest.mark.integration
def test_two_revisions_and_the_working_tree_compare_through_real_git_and_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    script = repo / "bench.py"
    for n in (100, 110):
        script.write_text(f"print('working')\nprint('things/s {n}')\n")
        _git(repo, "add", "bench.py")
        _git(repo, "commit", "-q", "-m", f"prints {n}")
    script.write_text("print('things/s 121 (uncommitted)')\n")
    monkeypatch.setattr(bench, "REPO", repo)
    bench.main(["HEAD~1", "--candidate", "HEAD", "--pairs", "2", "--", "bench.py"])
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "ab things/s ratio 1.100 (pairs 2, range 1.100-1.100)"
    bench.main(["HEAD", "--pairs", "1", "--", "bench.py"])  # the working tree, uncommitted change included
    assert capsys.readouterr().out.splitlines()[-1] == "ab things/s ratio 1.100 (pairs 1, range 1.100-1.100)"
    listed = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True, text=True)
    assert len(listed.stdout.splitlines()) == 1  # the temporary worktrees are gone
