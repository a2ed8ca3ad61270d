"""benchmarks/memory_ids.py, the ledger variant with its ids indexed in memory that ledger_insert.py
measures: the index finds each id's row as a dict of hash -> seq would, across merges; the table has
no index on the id; a stored id is kept out and a hash shared by another id is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.benchmarks.bench_module import load_bench

bench = load_bench("memory_ids", "memory_ids_bench")
HASHES = st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=40, unique=True)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(HASHES, min_size=1, max_size=2 * bench.MERGE_PARTS + 3), probe=HASHES)
def test_the_index_finds_what_a_dict_would_across_merges(batches: list[list[int]], probe: list[int]) -> None:
    index, want, seq = bench.MemoryIds(), {}, 0
    for hashes in batches:
        new = [h for h in hashes if h not in want]  # the ledger adds an id once
        seqs = list(range(seq + 1, seq + 1 + len(new)))
        seq += len(new)
        index.add(np.asarray(new, dtype=np.int64), np.asarray(seqs, dtype=np.int64))
        want.update(zip(new, seqs, strict=True))
    asked = list(want)[:5] + probe
    got = index.seqs_of(np.asarray(asked, dtype=np.int64)).tolist()
    assert got == [want.get(h, -1) for h in asked]
    assert len(index) == len(want) and index.nbytes == 16 * len(want)


def test_a_stored_id_is_kept_out_and_one_sharing_a_hash_is_not(tmp_path: Path) -> None:
    ledger_insert = load_bench("ledger_insert", "ledger_insert_bench")
    table = bench.MemoryIndexedTable(tmp_path / "m.db")
    first, second = ledger_insert.batch_of(50).values, ledger_insert.batch_of(50).values
    table.put(first, 3600.0)
    table.put([*second[:10], *first[:5]], 3600.0)  # five of them stored already
    assert table.kept_out == 5 and len(table.ids) == 60
    stored = table.conn.execute("SELECT count(*), count(DISTINCT request_id) FROM requests").fetchone()
    assert stored == (60, 60)
    sql = [
        row[0] for row in table.conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index'") if row[0]
    ]
    assert not any("request_id" in s or ("(seq)" in s and "WHERE" not in s) for s in sql)
    table.ids.add(np.asarray([hash(second[20][0])], dtype=np.int64), np.asarray([1], dtype=np.int64))
    table.put([second[20]], 3600.0)  # its hash is held for row 1, which holds another id: stored
    assert table.kept_out == 5
    found = table.conn.execute("SELECT count(*) FROM requests WHERE request_id = ?", (second[20][0],))
    assert found.fetchone() == (1,)
    table.conn.close()
