"""One training step's forward: both streams' audio through HTSAT together, all texts through the text
encoder together, then the losses in float32 outside autocast (§5.1: L = L_CLIP + 200·L_SED + L_prior).

`training_losses` returns `(loss, report)`: the scalar to backpropagate (already multiplied by the world size
under DDP, so that DDP's gradient averaging yields the gradient of the global-batch loss, see `model.loss`)
and the float values to log.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from model.flam import FLAM
from model.loss import LossWeights, clip_loss, sed_and_prior_loss, total_loss
from model.ring import Comm


@dataclass
class StepInputs:
    """A per-rank batch on the device (see `model.train.data.TrainStream.batch_for`)."""

    wave: (
        torch.Tensor
    )  # [Bg + Bs, 480000] float32, or int16 samples (÷ 32768 in the step); global clips first
    n_global: int
    resample_to: torch.Tensor | None  # [Bg + Bs] int64: C.5 rate to down-sample to and back (0 = none)
    global_texts: list[str]
    slot_texts: list[str]  # [K] ("" = padding)
    text_ids: torch.Tensor | None  # [K] int64
    text_mask: torch.Tensor | None  # [K] bool
    event_ids: torch.Tensor | None  # [Bs, E]
    event_frames: torch.Tensor | None  # [Bs, E, L] bool

    @classmethod
    def from_batch(cls, batch: dict[str, Any], device: torch.device) -> StepInputs:
        def dev(name: str) -> torch.Tensor | None:
            t = batch.get(name)
            return t.to(device, non_blocking=True) if t is not None else None

        return cls(
            wave=batch["wave"].to(device, non_blocking=True),
            n_global=int(batch["n_global"]),
            resample_to=batch.get("resample_to"),
            global_texts=list(batch["global_texts"]),
            slot_texts=list(batch.get("slot_texts", [])),
            text_ids=dev("text_ids"),
            text_mask=dev("text_mask"),
            event_ids=dev("event_ids"),
            event_frames=dev("event_frames"),
        )


def resample_augment(
    wave: torch.Tensor, rates: torch.Tensor | None, sample_rate: int = 48000
) -> torch.Tensor:
    """C.5 on the device: clips with rate r > 0 are down-sampled to r and back (torchaudio's windowed sinc);
    the length is kept. The rates were drawn in the loader, so the choice stays deterministic."""
    if rates is None or not bool((rates > 0).any()):
        return wave
    from torchaudio.functional import resample

    out = wave.clone()
    for r in sorted(set(rates[rates > 0].tolist())):
        idx = (rates == r).nonzero().flatten().to(wave.device)
        y = resample(resample(wave.index_select(0, idx), sample_rate, int(r)), int(r), sample_rate)
        n = min(y.shape[-1], wave.shape[-1])
        fixed = torch.zeros_like(out.index_select(0, idx))
        fixed[:, :n] = y[:, :n]
        out.index_copy_(0, idx, fixed)
    return out


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def training_losses(
    model: torch.nn.Module,
    inputs: StepInputs,
    weights: LossWeights,
    *,
    impl: str = "ring",
    loss_group: object | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward + losses for one step. `model` is a FLAM or a DDP-wrapped FLAM (one forward call)."""
    flam: FLAM = model.module if hasattr(model, "module") else model
    device = inputs.wave.device
    comm = Comm.of(loss_group)
    n_g = inputs.n_global
    has_sed = inputs.text_ids is not None
    valid = int(inputs.text_mask.sum()) if has_sed else 0
    # padding slots are never encoded: only the valid (leading) slot texts go through the text encoder
    texts = inputs.global_texts + inputs.slot_texts[:valid]
    padded_dummy = not texts
    if padded_dummy:  # no text on this rank this step (e.g. SED-only clips without events): one placeholder
        texts = ["none"]
    tok = flam.tokenize(texts)
    wave = inputs.wave
    if wave.dtype == torch.int16:  # 16-bit samples from the loader: the exact float32 decoding, on the device
        wave = wave.float() / 32768.0
    wave = resample_augment(wave, inputs.resample_to, flam.config.frontend.sample_rate)
    with autocast_context(device, autocast_dtype):
        out = model(wave, tok["input_ids"], tok["attention_mask"])
    frames, clip = out.frames.float(), out.clip.float()
    text, alpha, beta = out.texts.float(), out.alpha.float(), out.beta.float()
    zero = frames.sum() * 0.0
    report: dict[str, float] = {}

    if weights.clip > 0 and n_g > 0:
        l_clip = clip_loss(clip[:n_g], text[:n_g], out.logit_scale.float(), group=loss_group)
    else:
        l_clip = zero
    if has_sed and (weights.sed > 0 or weights.prior > 0):
        k = inputs.text_ids.shape[0]
        pad = k - valid
        s_text = F.pad(text[n_g : n_g + valid], (0, 0, 0, pad))
        s_alpha = F.pad(alpha[n_g : n_g + valid], (0, pad), value=1.0)
        s_beta = F.pad(beta[n_g : n_g + valid], (0, pad))
        l_sed, l_prior = sed_and_prior_loss(
            frames[n_g:], s_text, s_alpha, s_beta, inputs.text_ids, inputs.text_mask,
            inputs.event_ids, inputs.event_frames, impl=impl, group=loss_group,
        )  # fmt: skip
    else:
        l_sed, l_prior = zero, zero
    loss = total_loss(l_clip, l_sed, l_prior, weights)
    if padded_dummy:
        loss = loss + 0.0 * (text.sum() + alpha.sum() + beta.sum())  # keep every parameter in the graph
    report.update(
        loss=float(loss.detach()),
        l_clip=float(l_clip.detach()),
        l_sed=float(l_sed.detach()),
        l_prior=float(l_prior.detach()),
        logit_scale=float(out.logit_scale.detach()),
    )
    return loss * comm.world_size, report
