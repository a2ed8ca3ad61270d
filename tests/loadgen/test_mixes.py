"""Mix files: presets load; bad files fail with the file, line and field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.errors import InputError
from loadgen.mixes import PRESETS, allocate, load_mix, parse_mix
from loadgen.tasks import load_tasks

KNOWN = set(load_tasks())


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_name_only_study_tasks(preset: str) -> None:
    mix = load_mix(preset, KNOWN)
    assert mix.name == preset and mix.entries
    assert {e.task for e in mix.entries} <= KNOWN


def test_study_all_has_all_seven_tasks_and_study_llm_weights_follow_requests_per_run() -> None:
    assert {e.task for e in load_mix("study-all", KNOWN).entries} == KNOWN
    tasks = load_tasks()
    for e in load_mix("study-llm", KNOWN).entries:
        assert e.weight == tasks[e.task].requests_per_run


def test_list_and_mapping_forms_parse_the_same_weights() -> None:
    a = parse_mix("tasks:\n  - task: gpqa\n    weight: 3\n  - task: lm-arena-chat\n", "a.yaml", KNOWN)
    b = parse_mix("requests: 40\ntasks: {gpqa: 3, lm-arena-chat: 1}\n", "b.yaml", KNOWN)
    assert [(e.task, e.weight) for e in a.entries] == [(e.task, e.weight) for e in b.entries]
    assert b.requests == 40 and a.name == "a"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "tasks:\n  - task: gpqa\n  - task: chess\n",
            r"m\.yaml:3: field 'tasks\[1\]\.task': unknown task 'chess'",
        ),
        (
            "tasks:\n  - task: gpqa\n    weight: -2\n",
            r"m\.yaml:3: field 'tasks\[0\]\.weight': must be a finite number > 0",
        ),
        ("tasks: {gpqa: lots}\n", r"m\.yaml:1: field 'gpqa': must be a finite number > 0"),
        ("tasks: {gpqa: .nan}\n", r"m\.yaml:1: field 'gpqa': must be a finite number > 0, got nan"),
        ("tasks: {gpqa: .inf}\n", r"m\.yaml:1: field 'gpqa': must be a finite number > 0, got inf"),
        ("tasks:\n  - task: gpqa\n    wieght: 2\n", r"m\.yaml:3: field 'tasks\[0\]\.wieght': unknown key"),
        ("name: x\ntaks: []\n", r"m\.yaml:2: field 'taks': unknown key"),
        ("name: x\n", r"m\.yaml:1: field 'tasks': missing"),
        ("tasks: [\n", r"m\.yaml:2: not valid YAML"),
        ("requests: 0\ntasks: {gpqa: 1}\n", r"m\.yaml:1: field 'requests': must be an integer > 0"),
        (
            "requests: 100001\ntasks: {gpqa: 1}\n",
            r"m\.yaml:1: field 'requests': .* and <= 100000, got 100001",
        ),
        ("tasks:\n  - weight: 1\n", r"m\.yaml:2: field 'tasks\[0\]\.task': missing"),
    ],
)
def test_malformed_mix_errors_name_file_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        parse_mix(text, "m.yaml", KNOWN)


def test_a_missing_mix_file_names_the_presets(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="study-llm"):
        load_mix(str(tmp_path / "nope.yaml"), KNOWN)


def test_allocation_is_proportional_sums_to_total_and_gives_every_task_a_request() -> None:
    counts = allocate([1024, 198, 1024, 256, 64], 10)
    assert sum(counts) == 10 and min(counts) >= 1
    assert allocate([3, 1], 400) == [300, 100]
    assert allocate([1, 1, 1], 2) == [1, 1, 0]
