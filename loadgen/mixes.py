"""Task mixes: YAML files of task weights; presets ``study-llm``, ``study-diffusion``, ``study-all``.

Schema (a preset name or a path is accepted wherever a mix is)::

    name: my-mix             # optional; defaults to the file's stem
    requests: 400            # optional; total requests (``--requests`` overrides)
    tasks:                   # a list ...
      - task: lm-arena-chat  # one of the study's task ids
        weight: 3            # > 0; shares are weight / sum of weights
        dataset: chats.jsonl # optional: replay these rows (loadgen.datasets) instead of synthetic ones
      - task: sourcegraph-fim
        weight: 1
    # ... or a mapping: tasks: {lm-arena-chat: 3, sourcegraph-fim: 1}

Every error names the file, the line and the field (``mix.yaml:7: field 'tasks[1].weight': ...``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from loadgen.config import MAX_REQUESTS
from loadgen.errors import InputError, where

__all__ = ["PRESETS", "Mix", "MixEntry", "allocate", "load_mix", "parse_mix"]

PRESETS = ("study-llm", "study-diffusion", "study-all")
_ENTRY_KEYS = {"task", "weight", "dataset"}
_TOP_KEYS = {"name", "requests", "tasks"}


@dataclass(frozen=True, slots=True)
class MixEntry:
    """One task in a mix: its weight and, optionally, a JSONL dataset to replay."""

    task: str
    weight: float
    dataset: str | None = None
    line: int | None = None  # where it was defined (1-based), for later errors


@dataclass(frozen=True, slots=True)
class Mix:
    """A named set of weighted tasks; ``source`` is the file (or ``preset:<name>``)."""

    name: str
    entries: tuple[MixEntry, ...]
    requests: int | None = None
    source: str = ""

    def without(self, task_ids: set[str]) -> Mix:
        """The mix minus some tasks (e.g. skipped ones); the rest keep their relative weights."""
        kept = tuple(e for e in self.entries if e.task not in task_ids)
        return Mix(self.name, kept, self.requests, self.source)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _scalar(node: yaml.Node) -> object:
    return yaml.safe_load(yaml.serialize(node)) if isinstance(node, yaml.ScalarNode) else None


def _entry(
    path: str,
    field: str,
    node: yaml.Node,
    known: set[str],
    key_node: yaml.Node | None = None,
    value: yaml.Node | None = None,
) -> MixEntry:
    """One entry, from a list item (mapping) or a mapping pair ``task: weight``."""
    if key_node is not None and value is not None:
        task_node: yaml.Node = key_node
        weight_node: yaml.Node | None = value
        dataset_node: yaml.Node | None = None
    else:
        if not isinstance(node, yaml.MappingNode):
            raise InputError(
                f"{where(path, _line(node), field)}: expected a mapping with 'task' and 'weight'"
            )
        fields = {str(k.value): v for k, v in node.value}
        for k, _v in node.value:
            if k.value not in _ENTRY_KEYS:
                raise InputError(
                    f"{where(path, _line(k), f'{field}.{k.value}')}: unknown key; "
                    f"allowed: {sorted(_ENTRY_KEYS)}"
                )
        if "task" not in fields:
            raise InputError(f"{where(path, _line(node), field + '.task')}: missing")
        task_node = fields["task"]
        weight_node = fields.get("weight")
        dataset_node = fields.get("dataset")
        field = f"{field}"
    task = _scalar(task_node)
    if not isinstance(task, str) or task not in known:
        raise InputError(
            f"{where(path, _line(task_node), field + ('.task' if key_node is None else ''))}: "
            f"unknown task {task!r}; known tasks: {', '.join(sorted(known))}"
        )
    weight: object = 1.0 if weight_node is None else _scalar(weight_node)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < math.inf:
        line = _line(weight_node) if weight_node is not None else _line(node)
        raise InputError(
            f"{where(path, line, f'{field}.weight' if key_node is None else task)}: "
            f"must be a finite number > 0, got {weight!r}"
        )
    dataset = None
    if dataset_node is not None:
        value_ds = _scalar(dataset_node)
        if not isinstance(value_ds, str) or not value_ds:
            raise InputError(f"{where(path, _line(dataset_node), field + '.dataset')}: expected a file path")
        dataset = value_ds
    return MixEntry(task=task, weight=float(weight), dataset=dataset, line=_line(task_node))


def parse_mix(text: str, path: str, known_tasks: set[str]) -> Mix:
    """Parse mix YAML; errors name ``path``, the line and the field."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = int(mark.line) + 1 if mark is not None else None
        raise InputError(
            f"{where(path, line, None)}: not valid YAML ({getattr(err, 'problem', err)})"
        ) from err
    if not isinstance(root, yaml.MappingNode):
        raise InputError(
            f"{where(path, 1 if root is None else _line(root), None)}: expected a mapping with 'tasks'"
        )
    top = {str(k.value): (k, v) for k, v in root.value}
    for key, (k, _v) in top.items():
        if key not in _TOP_KEYS:
            raise InputError(f"{where(path, _line(k), key)}: unknown key; allowed: {sorted(_TOP_KEYS)}")
    if "tasks" not in top:
        raise InputError(f"{where(path, _line(root), 'tasks')}: missing")
    tasks_node = top["tasks"][1]
    entries: list[MixEntry] = []
    if isinstance(tasks_node, yaml.SequenceNode):
        for i, item in enumerate(tasks_node.value):
            entries.append(_entry(path, f"tasks[{i}]", item, known_tasks))
    elif isinstance(tasks_node, yaml.MappingNode):
        for k, v in tasks_node.value:
            entries.append(_entry(path, "tasks", tasks_node, known_tasks, key_node=k, value=v))
    else:
        raise InputError(
            f"{where(path, _line(tasks_node), 'tasks')}: expected a list or a mapping of task weights"
        )
    if not entries:
        raise InputError(f"{where(path, _line(tasks_node), 'tasks')}: no tasks")
    seen: set[str] = set()
    for e in entries:
        if e.task in seen and e.dataset is None:
            raise InputError(f"{where(path, e.line, 'task')}: task {e.task!r} listed twice")
        seen.add(e.task)
    requests = None
    if "requests" in top:
        req_node = top["requests"][1]
        value = _scalar(req_node)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_REQUESTS:
            raise InputError(
                f"{where(path, _line(req_node), 'requests')}: must be an integer > 0 and "
                f"<= {MAX_REQUESTS}, got {value!r}"
            )
        requests = value
    name = Path(path).stem
    if "name" in top:
        name = str(_scalar(top["name"][1]))
    return Mix(name=name, entries=tuple(entries), requests=requests, source=path)


def load_mix(name_or_path: str, known_tasks: set[str]) -> Mix:
    """A preset by name, or a mix file by path."""
    if name_or_path in PRESETS:
        text = resources.files("loadgen").joinpath(f"data/mixes/{name_or_path}.yaml").read_text("utf-8")
        return parse_mix(text, f"preset:{name_or_path}", known_tasks)
    path = Path(name_or_path)
    if not path.is_file():
        raise InputError(f"{name_or_path}: no such mix file and not a preset ({', '.join(PRESETS)})")
    return parse_mix(path.read_text("utf-8"), str(path), known_tasks)


def allocate(weights: list[float], total: int) -> list[int]:
    """Split ``total`` requests by ``weights`` (largest remainder; every task gets >= 1 when it can)."""
    if total <= 0 or not weights:
        return [0] * len(weights)
    s = sum(weights)
    exact = [w / s * total for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (exact[i] - counts[i], weights[i]), reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    if total >= len(weights):
        for i in range(len(counts)):
            while counts[i] == 0:
                j = max(range(len(counts)), key=lambda k: counts[k])
                counts[j] -= 1
                counts[i] += 1
    return counts
