"""Users' JSONL datasets: replayed as-is; errors name the file, line and field."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from loadgen.datasets import load_rows, requests_from_rows
from loadgen.errors import InputError
from loadgen.factories import FactoryOptions
from loadgen.tasks import load_tasks

TASKS = load_tasks()
OPTS = FactoryOptions(model="m")


def _write(tmp_path: Path, rows: list[object]) -> Path:
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return f


def test_chat_rows_replay_their_messages_and_keep_their_max_tokens(tmp_path: Path) -> None:
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "?"},
    ]
    f = _write(tmp_path, [{"messages": msgs, "max_tokens": 7}, "", {"prompt": "one line", "id": "x"}])
    rows = load_rows(f, TASKS["lm-arena-chat"])
    reqs = requests_from_rows(rows, TASKS["lm-arena-chat"], 3, np.random.default_rng(0), OPTS, "ds")
    assert reqs[0].body["messages"] == msgs and reqs[0].body["max_tokens"] == 7
    assert reqs[1].body["messages"] == [{"role": "user", "content": "one line"}]
    assert reqs[2].body["messages"] == msgs  # cycled
    assert [r.id for r in reqs] == ["ds-000000", "ds-000001", "ds-000002"]


def test_fim_rows_are_wrapped_in_the_template_and_sent_to_completions(tmp_path: Path) -> None:
    f = _write(tmp_path, [{"prefix": "def f(", "suffix": "):\n  pass"}])
    spec = TASKS["sourcegraph-fim"]
    (req,) = requests_from_rows(load_rows(f, spec), spec, 1, np.random.default_rng(0), OPTS, "ds")
    assert req.path == "/v1/completions"
    assert req.body["prompt"] == "<|fim_prefix|>def f(<|fim_suffix|>):\n  pass<|fim_middle|>"


def test_diffusion_rows_override_size_steps_and_frames(tmp_path: Path) -> None:
    f = _write(tmp_path, [{"prompt": "a cat", "size": "64x32", "steps": 3, "num_frames": 9}])
    spec = TASKS["text-to-video"]
    (req,) = requests_from_rows(load_rows(f, spec), spec, 1, np.random.default_rng(0), OPTS, "ds")
    assert req.body | {"seed": 0} == {
        "prompt": "a cat",
        "n": 1,
        "size": "64x32",
        "steps": 3,
        "seed": 0,
        "num_frames": 9,
        "fps": spec.fps,
    }


@pytest.mark.parametrize(
    "rows, task, expected",
    [
        (['{"messages": [}'], "lm-arena-chat", r"d\.jsonl:1: not valid JSON"),
        ([{"prompt": "a"}, {"messages": "hi"}], "lm-arena-chat", r"d\.jsonl:2: field 'messages'"),
        ([{"prompt": "a", "max_tokens": -1}], "gpqa", r"d\.jsonl:1: field 'max_tokens'"),
        ([{"prompt": "a", "temprature": 1}], "gpqa", r"d\.jsonl:1: field 'temprature': unknown field"),
        ([{"task": "gpqa", "prompt": "a"}], "lm-arena-chat", r"d\.jsonl:1: field 'task'"),
        ([{"suffix": "x"}], "sourcegraph-fim", r"d\.jsonl:1: field 'prefix': missing"),
        ([{"prompt": "a", "size": "big"}], "text-to-image", r"d\.jsonl:1: field 'size'"),
        (["[1, 2]"], "gpqa", r"d\.jsonl:1: expected a JSON object"),
    ],
)
def test_malformed_dataset_errors_name_file_line_and_field(
    tmp_path: Path, rows: list[object], task: str, expected: str
) -> None:
    with pytest.raises(InputError, match=expected):
        load_rows(_write(tmp_path, rows), TASKS[task])


def test_missing_or_empty_dataset_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_rows(tmp_path / "none.jsonl", TASKS["gpqa"])
    with pytest.raises(InputError, match="no rows"):
        load_rows(_write(tmp_path, [""]), TASKS["gpqa"])


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"prompt": "caf\u00e9"}\n'.encode("latin-1"), r"d\.jsonl:1: not UTF-8 text"),
        ('{"prompt": "a"}\n{"prompt": "hi"}\n'.encode("utf-16"), r"d\.jsonl:1: not UTF-8 text"),
        (b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n', r"d\.jsonl:2: not UTF-8 text"),
        (b'{"prompt": "a", "max_tokens": 1' + b"0" * 5000 + b"}\n", r"d\.jsonl:1: not valid JSON \(Exceeds"),
        (b'{"prompt": "a"}\n{"prompt": "a", "messages": ' + b"[" * 100_000 + b"\n", r"d\.jsonl:2: .*deeply"),
        (b'{"prompt": "a", "seed": NaN}\n', r"d\.jsonl:1: not valid JSON \(NaN is not a JSON number\)"),
    ],
    ids=["latin-1", "utf-16", "latin-1-line-2", "5001-digits", "deep", "nan"],
)
def test_a_dataset_not_utf8_or_not_strict_json_is_an_input_error_naming_the_line(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    f = tmp_path / "d.jsonl"
    f.write_bytes(content)
    with pytest.raises(InputError, match=expected):
        load_rows(f, TASKS["lm-arena-chat"])


def test_a_rows_own_id_is_kept_and_written_to_the_csv(tmp_path: Path) -> None:
    from loadgen.config import RunConfig
    from loadgen.records import Result
    from loadgen.report import write_csv
    from loadgen.runner import RunOutcome

    spec = TASKS["lm-arena-chat"]
    rows = load_rows(_write(tmp_path, [{"prompt": "a", "id": "conv-17-turn-2"}, {"prompt": "b"}]), spec)
    reqs = requests_from_rows(rows, spec, 3, np.random.default_rng(0), OPTS, "lg")
    assert [r.dataset_id for r in reqs] == ["conv-17-turn-2", "", "conv-17-turn-2"]
    assert len({r.id for r in reqs}) == 3  # rows cycle: the requests keep their own unique ids
    outcome = RunOutcome(RunConfig(), [Result(r, 0.0) for r in reqs], [], [], {}, [])
    write_csv(outcome, tmp_path / "requests.csv")
    with (tmp_path / "requests.csv").open() as f:
        assert [row["dataset_id"] for row in csv.DictReader(f)] == ["conv-17-turn-2", "", "conv-17-turn-2"]


@pytest.mark.parametrize("own_id", ["", "x" * 201, "two\nlines", "tab\there"])
def test_a_rows_id_that_is_empty_too_long_or_not_printable_is_refused(tmp_path: Path, own_id: str) -> None:
    with pytest.raises(InputError, match=r"d\.jsonl:1: field 'id': expected 1 to 200 printable"):
        load_rows(_write(tmp_path, [{"prompt": "a", "id": own_id}]), TASKS["gpqa"])
