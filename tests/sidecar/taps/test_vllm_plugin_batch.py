"""The plugin's decoding requests: one step batch per iteration, its members' tuple reused while unchanged."""

from __future__ import annotations

from sidecar.attribution.events import Phase
from sidecar.taps.vllm_plugin_batch import DecodingRequests


def test_each_iteration_is_one_batch_with_one_token_per_member_and_kv_caches_that_grow() -> None:
    decoding = DecodingRequests()
    assert decoding.step(0.0, 0.1) is None  # nobody decoding: no work
    decoding.add("a", 10)
    decoding.add("b", 20)
    first = decoding.step(0.1, 0.2)
    second = decoding.step(0.2, 0.3)
    assert first is not None and second is not None
    assert first.request_ids == ("a", "b") and (first.t0_s, first.t1_s) == (0.1, 0.2)
    assert first.phase.tolist() == [Phase.DECODE] * 2 and first.units.tolist() == [1.0, 1.0]
    assert first.context_tokens.tolist() == [11, 21] and second.context_tokens.tolist() == [12, 22]
    assert second.request_ids is first.request_ids  # same members: the attributor reuses their codes
    first.check()


def test_membership_changes_rebuild_the_batch_in_arrival_order() -> None:
    decoding = DecodingRequests()
    for rid in ("a", "b", "c"):
        decoding.add(rid, 5)
    decoding.step(0.0, 0.1)
    assert decoding.remove("b") and not decoding.remove("b")
    decoding.add("d", 7)  # joins later: its KV cache is its prompt and its first token
    decoding.remove_oldest()
    batch = decoding.step(0.1, 0.2)
    assert batch is not None and batch.request_ids == ("c", "d")
    assert batch.context_tokens.tolist() == [7, 8] and "a" not in decoding and len(decoding) == 2


def test_drain_hands_every_member_with_its_tokens_so_far_and_empties_the_set() -> None:
    decoding = DecodingRequests()
    decoding.add("a", 5)
    decoding.step(0.0, 0.1)
    decoding.add("b", 7)
    decoding.step(0.1, 0.2)
    assert decoding.drain() == [("a", 5, 3), ("b", 7, 2)]  # the prefill's token plus one per iteration
    assert len(decoding) == 0 and decoding.step(0.2, 0.3) is None
