"""Audio–text retrieval recall (paper Table 2), Clotho / AudioCaps protocol.

Every clip has one or more captions; ``text_audio_index[j]`` is the clip of caption ``j``. Similarities are dot
products of the (L2-normalised) embeddings, so they are cosine similarities.

* text → audio (T→A): each caption ranks all N clips; a hit at k when its own clip is among the top k.
  R@k is the mean over all M captions (with 5 captions per clip this equals the mean of the five
  one-caption-per-clip runs of the usual protocol).
* audio → text (A→T): each clip ranks all M captions; a hit at k when *any* of its own captions is among the
  top k, i.e. the best-ranked own caption counts (the other own captions are no competitors). R@k is the mean
  over all N clips.

Ties (exactly equal similarities, e.g. duplicate captions on two clips or a collapsed model) are settled by the
expected hit rate of a uniformly random tie-break (``ties="average"``, default): with ``g`` competitors strictly
above the target score, ``e`` competitors equal to it and ``m`` own items at that score, the hit probability at
k is ``1 − C(e, t) / C(e + m, t)`` with ``t = k − g`` slots left (0 when ``t ≤ 0``). Without ties this is exactly
"rank = number of strictly greater competitors, hit if rank < k". ``ties="optimistic"`` counts only strictly
greater competitors (ties won), ``"pessimistic"`` counts equal competitors as ahead (ties lost). Under
``"average"`` a model whose embeddings are all equal scores chance (k / N), not 100 %.

Values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TIE_RULES = ("average", "optimistic", "pessimistic")
_CHUNK_ELEMENTS = 1 << 22  # similarity entries per block (4 Mi float64 = 32 MiB)


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [n, dim] array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def hit_probability(
    greater: np.ndarray, equal: np.ndarray, own_tied: np.ndarray, k: int, ties: str
) -> np.ndarray:
    """Per query hit probability at ``k`` from tie counts (see the module docstring).

    ``greater``/``equal``: competitors strictly above / equal to the best target score; ``own_tied``: target
    items at that best score (≥ 1)."""
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    g = np.asarray(greater, dtype=np.int64)
    e = np.asarray(equal, dtype=np.int64)
    m = np.asarray(own_tied, dtype=np.int64)
    if ties == "optimistic":
        return (g < k).astype(np.float64)
    if ties == "pessimistic":
        return (g + e < k).astype(np.float64)
    t = k - g  # slots left for the tie group of e competitors + m own items
    # P(no own item in the first t of the e + m tied places) = prod_{i<t} (e − i) / (e + m − i)
    miss = np.ones(g.shape, dtype=np.float64)
    for i in range(int(k)):
        active = i < t
        num = np.maximum(e - i, 0).astype(np.float64)
        den = (e + m - i).astype(np.float64)
        miss = np.where(active, miss * np.divide(num, den, out=np.zeros_like(num), where=den > 0), miss)
    return np.where(t <= 0, 0.0, 1.0 - miss)


def _rank_counts(sim: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(greater, equal, own_tied) per row of ``sim`` [q, n] with bool ``own`` [q, n] marking target items."""
    best = np.where(own, sim, -np.inf).max(axis=1, keepdims=True)
    greater = ((sim > best) & ~own).sum(axis=1)
    equal = ((sim == best) & ~own).sum(axis=1)
    own_tied = ((sim == best) & own).sum(axis=1)
    return greater, equal, own_tied


def retrieval_metrics(
    audio_emb: np.ndarray,
    text_emb: np.ndarray,
    text_audio_index: Sequence[int] | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "average",
) -> dict:
    """R@k for text→audio and audio→text retrieval.

    ``audio_emb`` [N, D], ``text_emb`` [M, D] (L2-normalised), ``text_audio_index`` int [M] in [0, N): the clip
    of each caption; every clip needs at least one caption. Returns ``{"r1_t2a", "r5_t2a", "r10_t2a", "r1_a2t",
    ..., "n_audio", "n_texts", "ties"}`` (keys follow ``ks``), values as fractions in [0, 1]."""
    audio = _as_matrix(audio_emb, "audio_emb")
    text = _as_matrix(text_emb, "text_emb")
    idx = np.asarray(text_audio_index)
    n_audio, n_texts = audio.shape[0], text.shape[0]
    if audio.shape[1] != text.shape[1]:
        raise ValueError(f"embedding sizes differ: audio {audio.shape[1]}, text {text.shape[1]}")
    if n_audio == 0 or n_texts == 0:
        raise ValueError(
            f"need at least one clip and one caption, got {n_audio} clips and {n_texts} captions"
        )
    if idx.shape != (n_texts,) or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"text_audio_index must be an int array of shape ({n_texts},), got {idx.dtype} {idx.shape}"
        )
    if idx.min() < 0 or idx.max() >= n_audio:
        raise ValueError(f"text_audio_index values must be in [0, {n_audio}), got [{idx.min()}, {idx.max()}]")
    captions_per_clip = np.bincount(idx, minlength=n_audio)
    if np.any(captions_per_clip == 0):
        raise ValueError(
            f"{int(np.sum(captions_per_clip == 0))} clip(s) have no caption (A→T needs one per clip)"
        )
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive, got {ks}")
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")

    hits_t2a = {k: np.zeros(n_texts) for k in ks}
    step = max(1, _CHUNK_ELEMENTS // n_audio)
    for a in range(0, n_texts, step):
        b = min(a + step, n_texts)
        sim = text[a:b] @ audio.T  # [q, N]
        own = np.zeros(sim.shape, dtype=bool)
        own[np.arange(b - a), idx[a:b]] = True
        counts = _rank_counts(sim, own)
        for k in ks:
            hits_t2a[k][a:b] = hit_probability(*counts, k, ties)

    hits_a2t = {k: np.zeros(n_audio) for k in ks}
    step = max(1, _CHUNK_ELEMENTS // n_texts)
    for a in range(0, n_audio, step):
        b = min(a + step, n_audio)
        sim = audio[a:b] @ text.T  # [q, M]
        own = idx[None, :] == np.arange(a, b)[:, None]
        counts = _rank_counts(sim, own)
        for k in ks:
            hits_a2t[k][a:b] = hit_probability(*counts, k, ties)

    out: dict = {}
    for k in ks:
        out[f"r{k}_t2a"] = float(hits_t2a[k].mean())
    for k in ks:
        out[f"r{k}_a2t"] = float(hits_a2t[k].mean())
    out.update(n_audio=int(n_audio), n_texts=int(n_texts), ties=ties)
    return out
