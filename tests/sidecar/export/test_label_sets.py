"""Each per-request histogram keeps a bounded number of label sets, whatever names a client combines.

Model, operation and task names are each capped on their own (``test_aggregates.py``); a client naming
K models and K tasks in all K * K pairs stayed within both caps and made K * K label sets per histogram
(32 by 32: an 11.8 MB ``/metrics``). Past :data:`MAX_LABEL_SETS` a new label set reads ``other``.
"""

from __future__ import annotations

from collections.abc import Iterator
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from sidecar.attribution.records import RequestEnergy
from sidecar.export.metrics import MetricsExporter
from sidecar.export.record_histograms import MAX_LABEL_SETS, LabelSets
from tests.sidecar.export.factories import golden_snapshot, make_record

K = 32  # models and tasks, each well within its own cap (64): K * K = 1,024 pairs
PER_TOKEN = "gen_ai_server_energy_per_output_token_joules"
REQUEST = "gen_ai_server_request_energy_joules"
PER_UNIT = "gen_ai_server_energy_per_output_unit_joules"


@pytest.fixture
def exporter() -> Iterator[MetricsExporter]:
    made = MetricsExporter(golden_snapshot, resource=Resource({}))
    yield made
    made.shutdown()


def _pairs(**overrides: object) -> list[RequestEnergy]:
    """One request per (model, task) pair, models outer: model-0 with task-0 .. task-31, then model-1."""
    return [
        make_record(request_id=f"r{a}-{b}", model=f"model-{a}", task=f"task-{b}", **overrides)
        for a in range(K)
        for b in range(K)
    ]


def _label_sets(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Per histogram family: each label set (``le`` left out) and its ``_count``."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        sets = out.setdefault(family.name, {})
        for sample in family.samples:
            if sample.name.endswith("_count"):
                sets[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _of(sets: dict[tuple[tuple[str, str], ...], float], **labels: str) -> float | None:
    """The count of the one label set with these labels, None if there is none."""
    found = [n for key, n in sets.items() if labels.items() <= dict(key).items()]
    assert len(found) <= 1
    return found[0] if found else None


def test_all_pairs_of_k_models_and_k_tasks_stay_within_the_bound(exporter: MetricsExporter) -> None:
    assert exporter.record(_pairs()) == K * K
    text = exporter.render().decode()
    sets = _label_sets(text)
    assert set(sets) == {REQUEST, PER_TOKEN}
    for family in (REQUEST, PER_TOKEN):  # the first MAX_LABEL_SETS pairs, and the one folded set
        assert len(sets[family]) == MAX_LABEL_SETS + 1 < K * K
        assert sum(sets[family].values()) == K * K  # every request recorded once
    samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    assert samples < 7_000 and len(text) < 2_000_000  # unbounded: 49,390 samples, 11.8 MB


def test_the_first_label_sets_keep_their_series_and_the_rest_read_other(exporter: MetricsExporter) -> None:
    exporter.record(_pairs())
    exporter.record([make_record(request_id="again", model="model-0", task="task-0")])  # an existing set
    sets = _label_sets(exporter.render().decode())
    kept = divmod(MAX_LABEL_SETS - 1, K)  # the last pair with its own set: (model-3, task-31)
    for family in (REQUEST, PER_TOKEN):
        assert _of(sets[family], gen_ai_request_model="model-0", jouletrace_task="task-0") == 2
        last = {"gen_ai_request_model": f"model-{kept[0]}", "jouletrace_task": f"task-{kept[1]}"}
        assert _of(sets[family], **last) == 1
        assert _of(sets[family], gen_ai_request_model=f"model-{kept[0] + 1}") is None
        other = _of(sets[family], gen_ai_request_model="other", jouletrace_task="other")
        assert other == K * K - MAX_LABEL_SETS
        assert _of(sets[family], energy_source="measured", gen_ai_request_model="other") == other
    assert _of(sets[REQUEST], gen_ai_operation_name="other") == K * K - MAX_LABEL_SETS


def test_values_recorded_under_a_folded_label_set_are_counted(exporter: MetricsExporter) -> None:
    exporter.record(_pairs())
    folded = K * K - MAX_LABEL_SETS
    assert exporter.labels_folded == 2 * folded  # request energy and J per token, one value each a record
    exporter.record([make_record(request_id="again", model="model-0", task="task-0")])
    assert exporter.labels_folded == 2 * folded  # an existing set is not folded


def test_video_label_sets_are_bounded_per_unit_and_fold_with_their_unit(exporter: MetricsExporter) -> None:
    video = {"video_frames": "81", "video_fps": "16"}
    exporter.record(_pairs(unit="video", output_units=1.0, attributes=video))
    sets = _label_sets(exporter.render().decode())
    assert len(sets[PER_UNIT]) == MAX_LABEL_SETS + 3  # and one folded set per unit
    for unit in ("video", "frame", "video_second"):
        assert _of(
            sets[PER_UNIT], gen_ai_request_model="model-0", jouletrace_task="task-0", jouletrace_unit=unit
        )
        assert _of(sets[PER_UNIT], gen_ai_request_model="other", jouletrace_unit=unit)
    assert exporter.labels_folded == (K * K - MAX_LABEL_SETS) + (3 * K * K - MAX_LABEL_SETS)


def test_a_key_whose_names_already_read_other_is_not_counted_again() -> None:
    sets = LabelSets(1, 2)
    assert sets(("m", "t", "measured")) == ("m", "t", "measured")
    assert sets(("m", "t", "measured")) == ("m", "t", "measured")  # known: kept, not counted
    assert sets(("m", "u", "measured")) == ("other", "other", "measured") and sets.folded == 1
    assert sets(("other", "other", "measured")) == ("other", "other", "measured") and sets.folded == 1
    assert sets(("m", "u", "estimate")) == ("other", "other", "estimate") and sets.folded == 2


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.sampled_from(["chat", "rag", "code"]),
            st.sampled_from(["chat", "text_completion", "op-x"]),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_a_batch_names_and_folds_as_its_records_one_at_a_time(names: list[tuple[str, str, str, int]]) -> None:
    """Names a batch looked up once stand for its later records (the sets never forget a name); what
    was folded is looked up, and counted, each time: the same /metrics and folded count either way."""
    records = [
        make_record(request_id=f"r{k}", model=m, task=t, operation=o, output_tokens=n)
        for k, (m, t, o, n) in enumerate(names)
    ]
    texts, folded = [], []
    for batches in ([records], [[r] for r in records]):
        with patch("sidecar.export.record_histograms.MAX_LABEL_SETS", 3):  # the label sets fill too
            exporter = MetricsExporter(golden_snapshot, resource=Resource({}), max_model_labels=2, model="a")
        try:
            for batch in batches:
                exporter.record(batch)
            texts.append(exporter.render().decode())
            folded.append(exporter.labels_folded)
        finally:
            exporter.shutdown()
    assert texts[0] == texts[1]
    assert folded[0] == folded[1]
