"""eval.metrics.retrieval: perfect / random embeddings, the multi-caption A→T rule, ties, input checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from eval.metrics.retrieval import hit_probability, retrieval_metrics


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_perfect_embeddings_give_recall_one():
    rng = np.random.default_rng(0)
    audio = _unit(rng.normal(size=(40, 16)))
    idx = np.repeat(np.arange(40), 5)
    text = _unit(audio[idx] + 0.01 * rng.normal(size=(200, 16)))
    m = retrieval_metrics(audio, text, idx)
    for key in ("r1_t2a", "r5_t2a", "r1_a2t", "r5_a2t", "r10_t2a", "r10_a2t"):
        assert m[key] == pytest.approx(1.0)
    assert (m["n_audio"], m["n_texts"]) == (40, 200)


def test_random_embeddings_near_chance():
    rng = np.random.default_rng(1)
    n = 300
    audio = _unit(rng.normal(size=(n, 64)))
    idx = np.repeat(np.arange(n), 5)
    text = _unit(rng.normal(size=(5 * n, 64)))
    m = retrieval_metrics(audio, text, idx)
    assert m["r1_t2a"] == pytest.approx(1 / n, abs=0.006)
    assert m["r5_t2a"] == pytest.approx(5 / n, abs=0.012)
    # A→T: a hit when any of 5 captions is in the top k of 5n captions: ≈ 1 − (1 − k/(5n))^5 ≈ k/n
    assert m["r1_a2t"] == pytest.approx(1 - (1 - 1 / (5 * n)) ** 5, abs=0.012)
    assert m["r5_a2t"] == pytest.approx(1 - (1 - 5 / (5 * n)) ** 5, abs=0.03)


def test_multi_caption_a2t_hand_case():
    # 2 clips on axes e0, e1. Clip 0 has captions 0 (far off) and 1 (exact); clip 1 has caption 2 (exact).
    audio = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    text = _unit(np.array([[0.0, 0.8, 0.6], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    idx = np.array([0, 0, 1])
    m = retrieval_metrics(audio, text, idx, ks=(1, 2))
    # A→T clip 0: own best caption 1 (sim 1) ranks first → hit; the far own caption 0 does not matter.
    # A→T clip 1: caption 2 (sim 1) first → hit.
    assert m["r1_a2t"] == 1.0
    # T→A: caption 0 (sim 0 to clip 0, 0.8 to clip 1) misses at k=1 and hits at k=2; captions 1, 2 hit.
    assert m["r1_t2a"] == pytest.approx(2 / 3)
    assert m["r2_t2a"] == 1.0

    # The own caption that is best ranked counts even when another own caption is ranked last:
    # clip 1 with caption 2 moved off: the competitor caption 0 (0.8) beats caption 2 (0.6).
    text2 = _unit(np.array([[0.0, 0.8, 0.6], [1.0, 0.0, 0.0], [0.0, 0.6, 0.8]]))
    m2 = retrieval_metrics(audio, text2, idx, ks=(1, 2))
    assert m2["r1_a2t"] == 0.5  # clip 0 hit, clip 1 miss (caption 0 of clip 0 is ahead)
    assert m2["r2_a2t"] == 1.0


def test_a2t_own_captions_are_no_competitors():
    # Clip 0 has 3 captions, all more similar than clip 1's caption; clip 1's best caption must still rank
    # behind only the other clip's captions, and clip 0 gets a hit at k=1 regardless of its 3 captions.
    audio = np.array([[1.0, 0.0], [0.0, 1.0]])
    text = _unit(np.array([[1.0, 0.1], [1.0, 0.2], [1.0, 0.3], [0.2, 1.0]]))
    m = retrieval_metrics(audio, text, np.array([0, 0, 0, 1]), ks=(1,))
    assert m["r1_a2t"] == 1.0


def _brute_hit(scores_other: list[float], scores_own: list[float], k: int) -> float:
    """Expected hit at k over all orderings of exactly tied items (random tie-break), by enumeration."""
    items = [(s, False) for s in scores_other] + [(s, True) for s in scores_own]
    perms = list(itertools.permutations(range(len(items))))
    hits = 0
    for perm in perms:  # perm gives a tie-break priority to every item
        order = sorted(range(len(items)), key=lambda i: (-items[i][0], perm[i]))
        hits += any(items[i][1] for i in order[:k])
    return hits / len(perms)


@pytest.mark.parametrize(
    ("other", "own", "k"),
    [
        ([0.5, 0.5, 0.5], [0.5], 1),
        ([0.5, 0.5, 0.5], [0.5], 2),
        ([0.9, 0.5, 0.5], [0.5, 0.5], 2),
        ([0.5, 0.5, 0.5], [0.5, 0.1], 3),
        ([0.5, 0.5], [0.5, 0.5, 0.2], 1),
        ([0.9, 0.9], [0.5], 2),
    ],
)
def test_average_tie_rule_matches_enumeration(other, own, k):
    best = max(own)
    g = sum(s > best for s in other)
    e = sum(s == best for s in other)
    m = sum(s == best for s in own)
    got = hit_probability(np.array([g]), np.array([e]), np.array([m]), k, "average")[0]
    assert got == pytest.approx(_brute_hit(other, own, k))


def test_tie_rules_on_collapsed_embeddings():
    audio = np.ones((10, 4)) / 2.0
    text = np.ones((20, 4)) / 2.0
    idx = np.repeat(np.arange(10), 2)
    avg = retrieval_metrics(audio, text, idx, ks=(1, 5))
    assert avg["r1_t2a"] == pytest.approx(0.1) and avg["r5_t2a"] == pytest.approx(0.5)
    # A→T: 2 own among 20 tied captions, P(at least one in the first place) = 2/20
    assert avg["r1_a2t"] == pytest.approx(0.1)
    assert retrieval_metrics(audio, text, idx, ties="optimistic")["r1_t2a"] == 1.0
    assert retrieval_metrics(audio, text, idx, ties="pessimistic")["r5_t2a"] == 0.0


def test_chunked_equals_unchunked(monkeypatch):
    import eval.metrics.retrieval as r

    rng = np.random.default_rng(2)
    audio = _unit(rng.normal(size=(50, 8)))
    idx = rng.integers(0, 50, size=120)
    idx[:50] = np.arange(50)
    text = _unit(audio[idx] + 0.8 * rng.normal(size=(120, 8)))
    full = retrieval_metrics(audio, text, idx)
    monkeypatch.setattr(r, "_CHUNK_ELEMENTS", 64)
    assert retrieval_metrics(audio, text, idx) == full


def test_input_checks():
    audio = np.eye(3)
    with pytest.raises(ValueError, match="no caption"):
        retrieval_metrics(audio, np.eye(3)[:2], np.array([0, 1]))
    with pytest.raises(ValueError, match="in \\[0, 3\\)"):
        retrieval_metrics(audio, np.eye(3), np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="sizes differ"):
        retrieval_metrics(audio, np.eye(4), np.array([0, 1, 2, 2]))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.full((3, 3), np.nan), np.eye(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="ties"):
        retrieval_metrics(audio, np.eye(3), np.array([0, 1, 2]), ties="random")
