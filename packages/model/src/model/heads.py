"""Projections, per-text α/β heads and the frame-probability equations (paper §3, Eq. 3, 7, 8; App. C.6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def projection_mlp(d_in: int, d_out: int) -> nn.Sequential:
    """Linear → ReLU → Linear (keys `.0`, `.2` as in LAION-CLAP / OpenFLAM)."""
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, d_out))


def per_text_head(hidden: int, last_bias: float) -> nn.Sequential:
    """Linear(H,H) → GELU → Linear(H,1), last bias initialised to `last_bias` (App. C.6)."""
    head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
    nn.init.constant_(head[2].bias, last_bias)
    return head


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Eq. 3: unit-norm embeddings (eps 1e-12 as F.normalize)."""
    return F.normalize(x, dim=-1, eps=1e-12)


def per_text_alpha(scale_logit: torch.Tensor, aed_logit_scale: torch.Tensor) -> torch.Tensor:
    """α(y) = exp(MLP_α(y)) · exp(aed_logit_scale)."""
    return torch.exp(scale_logit) * torch.exp(aed_logit_scale)


def frame_similarity(frames: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """s[..., k, l] = ⟨normalize(frame_l), normalize(text_k)⟩; frames [..., L, D], texts [K, D] → [..., K, L]."""
    return torch.einsum("...ld,kd->...kl", l2_normalize(frames), l2_normalize(texts))


def approximate_probability(sim: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Eq. 8 (approximate, default): σ(α·s). alpha [K] broadcasts over sim [..., K, L]."""
    return torch.sigmoid(alpha[:, None] * sim)


def unbiased_probability(sim: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Unbiased form consistent with Eq. 21/23: p / (p + σ(β)), p = σ(α·s + β)."""
    p = torch.sigmoid(alpha[:, None] * sim + beta[:, None])
    return p / (p + torch.sigmoid(beta)[:, None])


def frame_probability(
    sim: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, method: str
) -> torch.Tensor:
    if method == "approximate":
        return approximate_probability(sim, alpha)
    if method == "unbiased":
        return unbiased_probability(sim, alpha, beta)
    raise ValueError(f"method must be 'approximate' or 'unbiased', got {method!r}")
