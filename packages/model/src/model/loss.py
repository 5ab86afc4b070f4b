"""FLAM losses: L_CLIP (Eq. 1), L_SED (Eq. 4–5), L_prior (Eq. 10) and their weighted sum (§5.1).

Global semantics (any world size, every rank passes its own slice of the global batch):

* Text set U = union of the valid text ids of every rank, each id once. A duplicated id is represented by
  its **first occurrence in global slot order** (rank-major: rank 0 slots 0..K0-1, then rank 1, ...); only
  that slot's text feature, α and β enter the losses, the other copies get zero gradient. The
  single-process reference is the same function on the concatenated global batch (world size 1), which
  picks the same slot, so values and gradients match.
* ``z[b,k,l] = +1`` iff clip b has an event with id k active in frame l (decided by id, never by slot).
  ``l_sed = mean over (global clip, k ∈ U, frame) of −log σ(z·(α_k⟨f_bl, t_k⟩ + sg(β_k)))``;
  ``l_prior = mean over k ∈ U of BCE-with-logits(β_k, share of positive frames of k over all N·L frames)``.
  No text at all (|U| = 0): both are 0 with zero gradients.
* Every rank returns the same (global) value; backpropagating it on **every** rank gives each rank exactly
  the gradient of the global value w.r.t. its own inputs (the other ranks' terms arrive through the ring or
  gather backward). Parameters replicated on all ranks (e.g. the CLIP logit scale, or anything under DDP)
  receive this rank's share: their sum over ranks is the full gradient, and DDP's averaging yields
  1/W of it — multiply the loss by W before backward if the exact global gradient is wanted.

Communication (``impl``): ids/masks and sizes are all-gathered once (W·K int64: the first-occurrence rule
needs every id before the ring starts); the positive-frame counts of the prior and the global clip count
are all-reduced (|U| int64). Text features, α and β travel as one [K, D+2] block:

* ``"ring"``: W−1 steps of send→rank+1 / recv←rank−1 (autograd sends gradients back the other way).
* ``"bidir"``: both directions at once, ⌈(W−1)/2⌉ steps.
* ``"gather"``: all-gather of the blocks with autograd (the oracle).
Audio frames never leave their rank.

Peak memory per rank (float32 elements; B clips/rank, K text slots/rank (max over ranks), L frames,
W ranks, D dim), above the caller's tensors (frames B·L·D, texts K·D) and their gradients:

* ring / bidir (``recompute=True``, default): W·K·(D+2) received blocks kept for backward + ~3·B·K·L
  transient for one block (logits, targets, loss terms and their gradients). Only the small block term
  grows with W.
* ring / bidir with ``recompute=False``, and gather: W·K·(D+2) + ~3·W·B·K·L (every block's autograd
  buffers, i.e. the whole local × global logit tensor).

Measured with ``benchmarks/loss.py`` (CPU, gloo, B=64, K=320, L=32, D=512: B·K·L = 2.5 MiB, frame gradient
4 MiB): peak above inputs at W = 1 / 2 / 4 — ring 11.6 / 16.2 / 18.1 MiB, gather 11.6 / 23.2 / 38.6 MiB;
bytes autograd keeps between forward and backward — ring 0.6 / 1.3 / 2.5 MiB, gather 6.3 / 11.5 / 18.9 MiB.
Compute the losses in float32 (outside bf16 autocast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from model.ring import Comm, all_gather_with_grad, all_reduce_value, ring_exchange

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # Eq. 1 (CLIP): initial log logit scale
LOGIT_SCALE_MAX = math.log(100.0)  # Eq. 1: logit scale clamped to ≤ 100
IMPLS = ("ring", "bidir", "gather")


@dataclass(frozen=True)
class LossWeights:
    """L = clip·L_CLIP + sed·L_SED + prior·L_prior (paper §5.1)."""

    clip: float = 1.0
    sed: float = 200.0
    prior: float = 1.0


def total_loss(
    l_clip: torch.Tensor, l_sed: torch.Tensor, l_prior: torch.Tensor, weights: LossWeights | None = None
) -> torch.Tensor:
    """Weighted sum of the three losses (§5.1: 1 / 200 / 1)."""
    w = weights if weights is not None else LossWeights()
    return w.clip * l_clip + w.sed * l_sed + w.prior * l_prior


# ---------------------------------------------------------------------------------------------- Eq. 1


def clip_logit_scale(logit_scale: torch.Tensor) -> torch.Tensor:
    """exp of the learnable log scale, clamped to ≤ 100 (Eq. 1)."""
    return logit_scale.clamp(max=LOGIT_SCALE_MAX).exp()


def clip_loss(
    audio: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, group: object | None = None
) -> torch.Tensor:
    """Eq. 1: symmetric InfoNCE over the global batch; pair i = (audio i, text i).

    ``audio``, ``text``: [B, D] L2-normalised embeddings of this rank's clips (B may differ across ranks);
    ``scale``: the exp'd, clamped logit scale, i.e. ``clip_logit_scale(param)`` of the learnable log scale
    (init ``LOGIT_SCALE_INIT``; FLAM's ``logit_scale``), as open_clip's ClipLoss takes it. Value = global mean of
    ½(CE audio→text + CE text→audio), the same on every rank (see module docstring for gradients).
    """
    if audio.dim() != 2 or audio.shape != text.shape:
        raise ValueError(f"clip_loss: audio {tuple(audio.shape)} and text {tuple(text.shape)} must be [B, D]")
    comm = Comm.of(group)
    sizes = comm.all_gather(torch.tensor(audio.shape, dtype=torch.int64, device=audio.device))
    if (sizes[:, 1] != audio.shape[1]).any():
        raise ValueError(f"clip_loss: embedding dims differ across ranks: {sizes[:, 1].tolist()}")
    counts = sizes[:, 0].tolist()
    n, b_max, offset = sum(counts), max(counts), sum(counts[: comm.rank])
    if n == 0:
        raise ValueError("clip_loss: the global batch is empty")
    pad = b_max - audio.shape[0]
    all_audio = all_gather_with_grad(comm, F.pad(audio, (0, 0, 0, pad)))
    all_text = all_gather_with_grad(comm, F.pad(text, (0, 0, 0, pad)))
    all_audio = torch.cat([all_audio[r, :c] for r, c in enumerate(counts)])
    all_text = torch.cat([all_text[r, :c] for r, c in enumerate(counts)])
    labels = torch.arange(offset, offset + audio.shape[0], device=audio.device)
    ce_a = F.cross_entropy(scale * audio @ all_text.T, labels, reduction="sum")
    ce_t = F.cross_entropy(scale * text @ all_audio.T, labels, reduction="sum")
    return all_reduce_value(comm, (ce_a + ce_t) / 2) / n


# ------------------------------------------------------------------------------------ Eq. 4, 5, 10


def sed_logits(
    frames: torch.Tensor, texts: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """Eq. 5: h[b,k,l] = α_k·⟨f_bl, t_k⟩ + β_k with β detached. frames [B,L,D], texts [K,D] → [B,K,L]."""
    sim = torch.einsum("bld,kd->bkl", frames, texts)
    return alpha[None, :, None] * sim + beta.detach()[None, :, None]


def sed_targets(event_ids: torch.Tensor, event_frames: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """y[b,k,l] ∈ {0,1} (z = 2y−1): clip b has an event with id ``ids[k]`` active in frame l.

    event_ids [B,E] (−1 = none), event_frames [B,E,L] (float or bool), ids [K] → [B,K,L] float.
    """
    match = (event_ids[:, :, None] == ids[None, None, :]) & (event_ids[:, :, None] >= 0)
    frames = event_frames if event_frames.is_floating_point() else event_frames.float()
    return torch.einsum("bek,bel->bkl", match.to(frames.dtype), frames).clamp(max=1.0)


def sed_pair_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Eq. 4 terms −log σ(z·h) with z = 2y − 1, summed (the caller divides by the global count) or mean."""
    terms = F.softplus(-(2 * targets - 1) * logits)
    return terms.sum() if reduction == "sum" else terms.mean()


def prior_loss(beta: torch.Tensor, share: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Eq. 10 terms BCE-with-logits(β_k, z̄_k), summed or mean."""
    return F.binary_cross_entropy_with_logits(beta, share.to(beta.dtype), reduction=reduction)


# --------------------------------------------------------------------------------- distributed driver


def _validate(frames, texts, alpha, beta, text_ids, text_mask, event_ids, event_frames, impl) -> str | None:  # noqa: ANN001
    if impl not in IMPLS:
        return f"impl must be one of {IMPLS}, got {impl!r}"
    if frames.dim() != 3 or texts.dim() != 2:
        return (
            f"frames must be [B, L, D] and texts [K, D], got {tuple(frames.shape)} and {tuple(texts.shape)}"
        )
    (b, n_frames, d), k = frames.shape, texts.shape[0]
    if texts.shape[1] != d:
        return f"texts dim {texts.shape[1]} != frames dim {d}"
    if frames.dtype != texts.dtype or not frames.is_floating_point():
        return f"frames ({frames.dtype}) and texts ({texts.dtype}) must share a floating dtype"
    for name, t in (("alpha", alpha), ("beta", beta), ("text_ids", text_ids), ("text_mask", text_mask)):
        if tuple(t.shape) != (k,):
            return f"{name} must be [K={k}], got {tuple(t.shape)}"
    if text_ids.dtype != torch.int64 or event_ids.dtype != torch.int64:
        return f"text_ids ({text_ids.dtype}) and event_ids ({event_ids.dtype}) must be int64"
    if text_mask.dtype != torch.bool or event_frames.dtype != torch.bool:
        return f"text_mask ({text_mask.dtype}) and event_frames ({event_frames.dtype}) must be bool"
    if event_ids.dim() != 2 or event_ids.shape[0] != b:
        return f"event_ids must be [B={b}, E], got {tuple(event_ids.shape)}"
    if tuple(event_frames.shape) != (b, event_ids.shape[1], n_frames):
        return f"event_frames must be [B, E, L] = {(b, event_ids.shape[1], n_frames)}, got {tuple(event_frames.shape)}"
    if (text_ids[text_mask] < 0).any():
        return "valid text slots (text_mask True) must have non-negative text_ids"
    return None


def _merge_events(event_ids: torch.Tensor, event_frames: torch.Tensor, dtype: torch.dtype):  # noqa: ANN202
    """Merge events of one clip that share an id (frames OR-ed into the first); others get id −1."""
    ids = torch.where(event_ids >= 0, event_ids, -1)
    same = (ids[:, :, None] == ids[:, None, :]) & (ids[:, :, None] >= 0)  # [B, E, E]
    earlier = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool, device=ids.device).tril(-1)  # e' < e
    first = (ids >= 0) & ~(same & earlier).any(-1)
    frames = (torch.einsum("bef,bfl->bel", same.to(dtype), event_frames.to(dtype)) > 0).to(dtype)
    return torch.where(first, ids, -1), frames


def _first_occurrence(all_ids: torch.Tensor) -> torch.Tensor:
    """[W, K] ids (−1 = none) → bool [W, K]: slot is the first occurrence of its id in rank-major order."""
    flat = all_ids.flatten()
    uniq, inverse = torch.unique(flat, return_inverse=True)
    pos = torch.arange(flat.numel(), device=flat.device)
    first = torch.full((uniq.numel(),), flat.numel(), dtype=torch.int64, device=flat.device)
    first = first.scatter_reduce(0, inverse, pos, reduce="amin")
    return ((first[inverse] == pos) & (flat >= 0)).view_as(all_ids)


def _block_sed_sum(frames, ev_ids, ev_frames, block, block_ids, rows, recompute):  # noqa: ANN001, ANN202
    """Sum of Eq. 4 terms of this rank's clips against the representative rows of one text block."""
    d = frames.shape[-1]

    def terms(frames: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        sel = block.index_select(0, rows)
        logits = sed_logits(frames, sel[:, :d], sel[:, d], sel[:, d + 1])
        return sed_pair_loss(logits, sed_targets(ev_ids, ev_frames, block_ids.index_select(0, rows)))

    if recompute and torch.is_grad_enabled() and (frames.requires_grad or block.requires_grad):
        return _Recompute.apply(terms, frames, block)
    return terms(frames, block)


class _Recompute(torch.autograd.Function):
    """Run ``fn(frames, block) -> scalar`` without keeping its intermediates; recompute them in backward.

    (torch.utils.checkpoint would do, but its first use imports torch._dynamo: seconds per process.)
    """

    @staticmethod
    def forward(ctx: Any, fn: Any, frames: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        ctx.fn = fn
        ctx.save_for_backward(frames, block)
        with torch.no_grad():
            return fn(frames, block)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        frames, block = (
            t.detach().requires_grad_(need)
            for t, need in zip(ctx.saved_tensors, ctx.needs_input_grad[1:], strict=True)
        )
        wanted = [t for t in (frames, block) if t.requires_grad]
        with torch.enable_grad():
            out = ctx.fn(frames, block) * grad
        # scalar output: scale instead of passing grad_outputs (that path imports sympy on first use)
        grads = iter(torch.autograd.grad(out, wanted, allow_unused=True, materialize_grads=True))
        return (
            None,
            next(grads) if frames.requires_grad else None,
            next(grads) if block.requires_grad else None,
        )


def sed_and_prior_loss(
    frames: torch.Tensor,
    texts: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    event_ids: torch.Tensor,
    event_frames: torch.Tensor,
    impl: str = "ring",
    group: object | None = None,
    *,
    recompute: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(l_sed, l_prior) over the global batch (module docstring has the exact semantics).

    frames [B,L,D] and texts [K,D] L2-normalised; alpha, beta [K] (α already exp'd; β detached inside
    L_SED); text_ids [K] int64; text_mask [K] bool; event_ids [B,E] int64 (−1 = none); event_frames
    [B,E,L] bool. B and K may differ across ranks; L and D may not. ``recompute`` (ring/bidir) recomputes
    each block's logits in backward instead of storing them (memory O(B·K·L) instead of O(W·B·K·L)).
    Collective: every rank of ``group`` must call it, with the same ``impl``, and backpropagate it.
    """
    comm = Comm.of(group)
    err = _validate(frames, texts, alpha, beta, text_ids, text_mask, event_ids, event_frames, impl)
    dev = frames.device
    shape = tuple(frames.shape) if frames.dim() == 3 else (0, 0, 0)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (frames, texts, alpha, beta))
    meta = torch.tensor([*shape, texts.shape[0], int(needs_grad), int(err is not None)], dtype=torch.int64)
    meta = comm.all_gather(meta.to(dev)).cpu()  # [W, 6]: B, L, D, K, grad, error
    if err is not None:
        raise ValueError(f"sed_and_prior_loss (rank {comm.rank}): {err}")
    if meta[:, 5].any():
        raise ValueError(
            f"sed_and_prior_loss: invalid inputs on rank(s) {meta[:, 5].nonzero().flatten().tolist()}"
        )
    if (meta[:, 1] != shape[1]).any() or (meta[:, 2] != shape[2]).any():
        raise ValueError(f"sed_and_prior_loss: L and D must agree across ranks, got {meta[:, 1:3].tolist()}")
    _, n_frames, d = shape
    n_clips, k_max, any_grad = int(meta[:, 0].sum()), int(meta[:, 3].max()), bool(meta[:, 4].any())
    if n_clips == 0:
        raise ValueError("sed_and_prior_loss: the global batch has no clips")

    local_ids = F.pad(torch.where(text_mask, text_ids, -1), (0, k_max - texts.shape[0]), value=-1)
    all_ids = comm.all_gather(local_ids)  # [W, Kmax]
    rep = _first_occurrence(all_ids)
    uniq = torch.unique(all_ids[rep])  # sorted global text set U
    n_texts = uniq.numel()
    if n_texts == 0:
        # empty slices keep the graph (zero gradients) without touching padding values (NaN-safe)
        zero = sum(t.flatten()[:0].sum() for t in (frames, texts, alpha, beta))
        return zero, zero.clone()

    ev_ids, ev_frames = _merge_events(event_ids, event_frames, frames.dtype)
    # Eq. 10 target: share of positive frames of each text over all N·L global frames.
    slot = torch.searchsorted(uniq, ev_ids.clamp(min=0))
    known = (ev_ids >= 0) & (uniq[slot.clamp(max=n_texts - 1)] == ev_ids)
    counts = torch.zeros(n_texts, dtype=torch.int64, device=dev)
    counts.index_add_(0, slot[known], ev_frames[known].sum(-1).round().to(torch.int64))
    share = comm.all_reduce(counts).to(torch.float64) / (n_clips * n_frames)

    own = rep[comm.rank, : texts.shape[0]].nonzero().flatten()
    own_share = share[torch.searchsorted(uniq, text_ids.index_select(0, own))]
    prior_sum = prior_loss(beta.index_select(0, own), own_share)

    block = torch.cat([texts, alpha[:, None].to(texts.dtype), beta.detach()[:, None].to(texts.dtype)], 1)
    block = F.pad(block, (0, 0, 0, k_max - texts.shape[0]))
    if any_grad and not block.requires_grad:
        block = block.detach().requires_grad_()  # other ranks backpropagate through the ring: take part
    rows = [rep[r].nonzero().flatten().to(dev) for r in range(comm.world_size)]

    def part(blk: torch.Tensor, owner: int) -> torch.Tensor:
        owner %= comm.world_size
        return _block_sed_sum(frames, ev_ids, ev_frames, blk, all_ids[owner], rows[owner], recompute)

    w, r = comm.world_size, comm.rank
    if impl == "gather" and w > 1:
        blocks = all_gather_with_grad(comm, block)  # [W, Kmax, D+2]
        sel = torch.cat([blocks[o].index_select(0, rows[o]) for o in range(w)])
        logits = sed_logits(frames, sel[:, :d], sel[:, d], sel[:, d + 1])
        sed_sum = sed_pair_loss(
            logits, sed_targets(ev_ids, ev_frames, torch.cat([all_ids[o][rows[o]] for o in range(w)]))
        )
    elif impl == "bidir":
        n_fwd, n_bwd = w // 2, (w - 1) // 2  # ⌈(W−1)/2⌉ and ⌊(W−1)/2⌋ steps
        sed_sum, fwd, bwd = part(block, r), block, block
        for j in range(1, n_fwd + 1):
            fwd, from_next = ring_exchange(comm, fwd, bwd if j <= n_bwd else None)
            sed_sum = sed_sum + part(fwd, r - j)
            if from_next is not None:
                bwd = from_next
                sed_sum = sed_sum + part(bwd, r + j)
    else:
        sed_sum, cur = part(block, r), block
        for i in range(1, w):
            cur, _ = ring_exchange(comm, cur)
            sed_sum = sed_sum + part(cur, r - i)
    sed_sum, prior_sum = all_reduce_value(comm, torch.stack([sed_sum, prior_sum.to(sed_sum.dtype)]))
    return sed_sum / (n_clips * n_texts * n_frames), prior_sum / n_texts
