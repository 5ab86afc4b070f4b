"""synth.split: deterministic hash-rank held-out split, per kind, counts or fractions."""

from __future__ import annotations

import random

import pytest

from synth.split import SplitConfig, assign_splits, heldout_count, heldout_ids, split_counts, split_key


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


def test_fraction_counts_per_kind():
    rows = assign_splits(make_rows(), SplitConfig(heldout_events=0.1, heldout_backgrounds=0.2))
    counts = split_counts(rows)
    assert counts["event"] == {"train": 180, "heldout": 20}
    assert counts["background"] == {"train": 24, "heldout": 6}
    assert counts["none"] == {"train": 5, "heldout": 0}


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


def test_growing_the_corpus_moves_few_files():
    """A file's rank key never changes: adding files only shifts the cut, not the whole split."""
    small = splits_of(assign_splits(make_rows(200, 30), SplitConfig(heldout_events=20)))
    big = splits_of(assign_splits(make_rows(220, 30), SplitConfig(heldout_events=20)))
    held_small = {k for k, v in small.items() if v == "heldout" and k.startswith("ev/")}
    held_big = {k for k, v in big.items() if v == "heldout" and k.startswith("ev/")}
    assert len(held_small & held_big) >= 15


def test_heldout_ids_disjoint_and_rank_based():
    ids = [f"f{i}" for i in range(50)]
    held = heldout_ids(ids, 7)
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
