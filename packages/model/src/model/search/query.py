"""`model.search query`: rank the indexed audio for a text, scored exactly as `frame_probabilities` would.

Score of a frame: the text's embedding, α and β come from `model.inference.text_embeddings` (the text side of
`frame_probabilities`: same `normalize_text`), the similarity is the dot product with the stored (normalised)
frame embedding, the probability is Eq. 8 (`model.heads.frame_probability`, approximate or unbiased), and the
median filter runs over each file's frames (`model.inference.median_filter_frames`, edges replicated per file).

A hit is a detection (`model.detect.outputs.scored_segments`, the rule of `model.detect`): a maximal run of
one file's frames whose probability is ≥ the threshold, from its first frame's start to its last frame's end
(cut at the file's end); its score is the highest frame probability in the run. Hits are ranked by score (then
path, then start). Only files whose raw frame maximum reaches the threshold can hold a hit (a median of frames
below it stays below it), so only those are median-filtered (in one vectorised call), and only the files
whose filtered maximum is among the `top` highest are segmented.

Cost: one pass of float32 matrix products over all stored frames (memory-mapped segments) — brute force, exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

import numpy as np
import torch

from model.detect.outputs import scored_segments
from model.heads import frame_probability
from model.inference import median_filter_frames
from model.search.index import FileEntry, IndexView


@dataclass(frozen=True)
class Hit:
    path: str  # the file's path (index root / relative path)
    start_s: float
    end_s: float
    score: float


def frame_similarities(view: IndexView, text_emb: np.ndarray) -> tuple[np.ndarray, list[tuple[str, FileEntry]], np.ndarray, np.ndarray]:  # fmt: skip
    """[N, K] similarities of all indexed frames with K normalised text embeddings, the files in row order, each
    file's first row in the result and its number of rows."""
    order = sorted(view.manifest.files.items(), key=lambda kv: (kv[1].segment, kv[1].row))
    counts = np.array([e.n_frames for _, e in order], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts.size else counts
    emb_t = np.ascontiguousarray(np.asarray(text_emb, dtype=np.float32).T)
    sims = np.empty((int(counts.sum()), emb_t.shape[1]), dtype=np.float32)
    pos = 0
    for seg, group in groupby(order, key=lambda kv: kv[1].segment):
        entries = [e for _, e in group]
        arr = view.segments[seg]
        lo = min(e.row for e in entries)
        hi = max(e.row + e.n_frames for e in entries)
        n = sum(e.n_frames for e in entries)
        if hi - lo == n and all(entries[i].row + entries[i].n_frames == entries[i + 1].row for i in range(len(entries) - 1)):  # fmt: skip
            np.matmul(arr[lo:hi], emb_t, out=sims[pos : pos + n])  # live rows back to back: straight in
        else:
            block = arr[lo:hi] @ emb_t
            for e in entries:
                sims[pos : pos + e.n_frames] = block[e.row - lo : e.row - lo + e.n_frames]
                pos += e.n_frames
            continue
        pos += n
    return sims, order, starts, counts


def median_filtered(row: np.ndarray, starts: np.ndarray, counts: np.ndarray, files: np.ndarray,
                    size: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`median_filter_frames` of each listed file's frames (edges replicated per file), in one call: each file is
    laid out with its own `size // 2` edge copies on both sides, so every window sees exactly what it sees in
    `frame_probabilities`. Returns the filtered frames of those files back to back and each one's first index."""
    h = size // 2
    n = counts[files]
    lens = n + 2 * h
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]])
    j = np.arange(int(lens.sum())) - np.repeat(offs, lens) - h  # position in its file, −h … n+h−1
    nn = np.repeat(n, lens)
    padded = row[np.repeat(starts[files], lens) + np.clip(j, 0, nn - 1)]
    filt = median_filter_frames(padded, size)[(j >= 0) & (j < nn)]
    return filt, np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)


def search(view: IndexView, text_emb: np.ndarray, alpha: np.ndarray, beta: np.ndarray, *, method: str = "approximate",
           median_filter: int = 3, threshold: float = 0.5, top: int = 10) -> list[list[Hit]]:  # fmt: skip
    """Ranked hits per text (at most `top`; 0 = all)."""
    if method not in ("approximate", "unbiased"):
        raise ValueError(f"method must be 'approximate' or 'unbiased', got {method!r}")
    if median_filter < 1 or median_filter % 2 == 0:
        raise ValueError(f"median filter size must be odd, got {median_filter}")
    sims, order, starts, counts = frame_similarities(view, text_emb)
    raw = frame_probability(torch.from_numpy(sims.T), torch.as_tensor(alpha, dtype=torch.float32),
                            torch.as_tensor(beta, dtype=torch.float32), method).numpy()  # fmt: skip
    root = view.manifest.root
    hop_s = view.manifest.frame_hop_s
    out = []
    for k in range(raw.shape[0]):
        hits: list[Hit] = []
        cand = np.flatnonzero(np.maximum.reduceat(raw[k], starts) >= threshold) if starts.size else starts
        if cand.size:
            filt, fstarts = median_filtered(raw[k], starts, counts, cand, median_filter)
            best = np.maximum.reduceat(filt, fstarts)
            keep = np.flatnonzero(best >= threshold)
            if top > 0 and keep.size > top:  # a file's best hit scores its maximum: the top hits lie in the
                kth = np.sort(best[keep])[-top]  # files with the `top` highest maxima (ties kept)
                keep = keep[best[keep] >= kth]
            for i in keep.tolist():
                rel, e = order[int(cand[i])]
                a = int(fstarts[i])
                for on, off, score in scored_segments(
                    filt[a : a + e.n_frames], threshold, hop_s, e.duration_s
                ):
                    hits.append(Hit(f"{root}/{rel}", on, off, score))
        hits.sort(key=lambda h: (-h.score, h.path, h.start_s))
        out.append(hits[:top] if top > 0 else hits)
    return out
