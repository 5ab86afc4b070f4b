"""synth.split: deterministic held-out split per kind: per-id threshold (fractions) or hash rank (counts)."""

from __future__ import annotations

import random

import pytest

from synth.split import (
    SplitConfig,
    assign_splits,
    hash_unit,
    heldout_count,
    heldout_ids,
    split_counts,
    split_key,
)


def make_rows(n_events=200, n_backgrounds=30, n_none=5):
    rows = [{"id": f"ev/{i}", "kind": "event"} for i in range(n_events)]
    rows += [{"id": f"bg/{i}", "kind": "background"} for i in range(n_backgrounds)]
    rows += [{"id": f"no/{i}", "kind": "none"} for i in range(n_none)]
    return rows


def splits_of(rows):
    return {r["id"]: r["split"] for r in rows}


def test_deterministic_and_order_independent():
    a = assign_splits(make_rows())
    shuffled = make_rows()
    random.Random(0).shuffle(shuffled)
    b = assign_splits(shuffled)
    assert splits_of(a) == splits_of(b)
    assert split_key("x/y") == split_key("x/y") != split_key("x/y", salt="other")


def test_fraction_is_a_per_id_threshold():
    rows = assign_splits(make_rows(), SplitConfig(heldout_events=0.1, heldout_backgrounds=0.2))
    for r in rows:
        frac = {"event": 0.1, "background": 0.2, "none": 0}[r["kind"]]
        assert (r["split"] == "heldout") == (hash_unit(r["id"]) < frac), r
    counts = split_counts(rows)
    assert 10 <= counts["event"]["heldout"] <= 30 and 1 <= counts["background"]["heldout"] <= 12
    assert counts["none"] == {"train": 5, "heldout": 0}


def test_adding_files_never_moves_existing_files_in_fraction_mode():
    cfg = SplitConfig(heldout_events=0.1, heldout_backgrounds=0.3)
    small = splits_of(assign_splits(make_rows(200, 30), cfg))
    for n_events, n_bgs in ((201, 30), (260, 31), (1000, 90)):
        big = splits_of(assign_splits(make_rows(n_events, n_bgs), cfg))
        assert {k: big[k] for k in small} == small
    # removing files does not move the others either
    fewer = splits_of(assign_splits(make_rows(120, 20), cfg))
    assert fewer == {k: small[k] for k in fewer}


def test_integer_counts_like_the_paper():
    rows = assign_splits(make_rows(), SplitConfig(heldout_events=10, heldout_backgrounds=5, heldout_none=2))
    counts = split_counts(rows)
    assert counts["event"]["heldout"] == 10 and counts["background"]["heldout"] == 5
    assert counts["none"]["heldout"] == 2
    # paper counts on a corpus smaller than them: everything but one file per kind is held out
    rows = assign_splits(make_rows(20, 4), SplitConfig(heldout_events=10_000, heldout_backgrounds=5_000))
    assert split_counts(rows)["event"] == {"train": 1, "heldout": 19}


def test_at_least_one_heldout_per_kind():
    rows = assign_splits(make_rows(3, 2, 0))  # 10 % of 2 or 3 rounds to 0
    counts = split_counts(rows)
    assert counts["event"]["heldout"] == 1 and counts["background"] == {"train": 1, "heldout": 1}
    single = assign_splits([{"id": "only", "kind": "background"}])
    assert single[0]["split"] == "train"
    assert heldout_count(10, 0) == 0 and heldout_count(10, 0.0) == 0


def test_count_mode_moves_few_files_when_the_corpus_grows():
    """Count mode ranks by hash: stable for a fixed corpus; growing it only shifts the cut."""
    small = splits_of(assign_splits(make_rows(200, 30), SplitConfig(heldout_events=20)))
    big = splits_of(assign_splits(make_rows(220, 30), SplitConfig(heldout_events=20)))
    held_small = {k for k, v in small.items() if v == "heldout" and k.startswith("ev/")}
    held_big = {k for k, v in big.items() if v == "heldout" and k.startswith("ev/")}
    assert len(held_small & held_big) >= 15


def test_tiny_kind_fallbacks_take_the_extreme_hashes():
    ids = ["a", "b"]
    ranked = sorted(ids, key=lambda i: (split_key(i), i))
    assert heldout_ids(ids, 1e-9) == {ranked[0]}  # threshold picks none: smallest hash held out
    assert heldout_ids(ids, 0.999999) == {ranked[0]}  # picks all: largest hash stays in train
    assert heldout_ids(["a"], 0.5) <= {"a"} and heldout_ids(ids, 0.0) == set()


def test_heldout_ids_disjoint_and_rank_based():
    ids = [f"f{i}" for i in range(50)]
    held = heldout_ids(ids, 7)  # count mode: hash rank
    ranked = sorted(ids, key=lambda i: (split_key(i), i))
    assert held == set(ranked[:7])
    with pytest.raises(ValueError, match="distinct"):
        heldout_ids(["a", "a"], 1)


@pytest.mark.parametrize(
    "kw",
    [{"heldout_events": 1.0}, {"heldout_events": -1}, {"heldout_backgrounds": True}, {"heldout_none": "5"}],
)
def test_config_validation(kw):
    with pytest.raises(ValueError, match="SplitConfig"):
        SplitConfig(**kw)


def test_bad_rows():
    with pytest.raises(ValueError, match="kind"):
        assign_splits([{"id": "a", "kind": "ambience"}])
    with pytest.raises(ValueError, match="without id"):
        assign_splits([{"id": "", "kind": "event", "path": "/x.wav"}])


def test_parse_heldout_counts_and_fractions():
    from synth.split import parse_heldout

    assert parse_heldout("10000") == 10000 and isinstance(parse_heldout("10000"), int)
    assert parse_heldout("0.1") == 0.1 and isinstance(parse_heldout("0.1"), float)
    assert parse_heldout("0") == 0
    for bad, msg in (("1.0", "below 1"), ("-1", ">= 0"), ("ten", "count"), ("nan", ">= 0")):
        with pytest.raises(ValueError, match=msg):
            parse_heldout(bad)
