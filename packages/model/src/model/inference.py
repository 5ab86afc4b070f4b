"""Inference on audio of any length, rate and channel count.

Stitching rule: audio (resampled to 48 kHz, downmixed) is cut into 10-s windows with a hop of h output frames
(`model.inference_hop_frames`, default h = 16 = 5 s; any even h in [2, 32]); audio shorter than the windows is
zero padded at the end. Window j covers global frames [hj, hj+32). Each global frame is taken from the window
where it is most central: local frames [m, m+h) of every window, m = (32−h)/2 (h = 16: [8, 24)), plus local
[0, m) of the first window and [m+h, 32) of the last. h = 24 costs 1.33× instead of 2× the audio length with
8 frames (2.5 s) of context kept on each side instead of 8–24. The stitched grid has frame
k ↔ [k, k+1)·0.3125 s and is cut to ceil(samples / 15000) frames. A 10-s input is exactly one window, so the
result equals the plain 10-s forward. Windows are a strided view (no copy) run in batches; text embeddings are
computed once per call.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from model.config import FLAMConfig
from model.heads import frame_probability, frame_similarity, l2_normalize

if TYPE_CHECKING:
    from model.flam import FLAM


def prepare_waveform(wave: Any, sample_rate: int, target_sr: int = 48000) -> torch.Tensor:
    """1-D or [channels, samples] array/tensor at `sample_rate` → mono float32 tensor at `target_sr`."""
    x = wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    if x.ndim == 2:
        if x.shape[0] > 16 and x.shape[1] <= 16:
            raise ValueError(
                f"wave of shape {x.shape} looks like samples × channels; pass channels × samples (wave.T)"
            )
        x = x.mean(0)
    if x.ndim != 1:
        raise ValueError(f"wave must be 1-D or channels × samples, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("wave is empty")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"wave must be floating point in [-1, 1], got dtype {x.dtype}")
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("wave contains NaN or Inf")
    if sample_rate != target_sr:
        import soxr

        x = soxr.resample(x, int(sample_rate), target_sr).astype(np.float32, copy=False)
    return torch.from_numpy(np.ascontiguousarray(x))


def frame_hop_samples(cfg: FLAMConfig) -> int:
    return cfg.frontend.clip_samples // cfg.audio.n_frames  # 15000 at 48 kHz


def n_output_frames(n_samples: int, cfg: FLAMConfig) -> int:
    return max(1, math.ceil(n_samples / frame_hop_samples(cfg)))


def frame_times(n_frames: int, cfg: FLAMConfig) -> np.ndarray:
    """Start time (s) of each output frame."""
    return np.arange(n_frames) * (frame_hop_samples(cfg) / cfg.frontend.sample_rate)


def check_hop_frames(hop_frames: int, cfg: FLAMConfig) -> None:
    n = cfg.audio.n_frames
    if not (2 <= hop_frames <= n and (n - hop_frames) % 2 == 0):
        raise ValueError(f"hop_frames must be an even number in [2, {n}], got {hop_frames}")


def make_windows(x: torch.Tensor, cfg: FLAMConfig, hop_frames: int = 16) -> torch.Tensor:
    """Mono 48-kHz signal → [J, clip_samples] windows, hop = hop_frames output frames (zero padded at the end)."""
    check_hop_frames(hop_frames, cfg)
    win, hop = cfg.frontend.clip_samples, hop_frames * frame_hop_samples(cfg)
    n = x.shape[0]
    n_win = 1 if n <= win else 1 + math.ceil((n - win) / hop)
    total = (n_win - 1) * hop + win
    if total > n:
        x = torch.nn.functional.pad(x, (0, total - n))
    return x.unfold(0, win, hop)


def stitch_frames(feats: torch.Tensor, hop_frames: int | None = None) -> torch.Tensor:
    """[J, L, C] window frames (hop h, default L/2) → [(J−1)·h + L, C]: each frame from its most central window."""
    n_win, length, c = feats.shape
    h = length // 2 if hop_frames is None else hop_frames
    m = (length - h) // 2
    if n_win == 1:
        return feats[0]
    return torch.cat([feats[0, :m], feats[:, m : m + h].reshape(-1, c), feats[-1, m + h :]], dim=0)


def _autocast(model: FLAM) -> torch.autocast:
    dt = model.autocast_dtype
    return torch.autocast(model.device.type, dtype=dt or torch.bfloat16, enabled=dt is not None)


@torch.inference_mode()
def frame_features(model: FLAM, wave: Any, sample_rate: int) -> torch.Tensor:
    """Stitched pre-projection frame features [n_frames, C] (float32) for audio of any length."""
    cfg = model.config
    x = prepare_waveform(wave, sample_rate, cfg.frontend.sample_rate)
    n_frames = n_output_frames(x.shape[0], cfg)
    hop = model.inference_hop_frames
    windows = make_windows(x, cfg, hop)
    bs = max(1, model.inference_batch_size)
    outs = []
    with _autocast(model):
        for i in range(0, windows.shape[0], bs):
            outs.append(model.audio_features(windows[i : i + bs].to(model.device)).float())
    return stitch_frames(torch.cat(outs), hop)[:n_frames]


@torch.inference_mode()
def _project_frames(model: FLAM, feats: torch.Tensor) -> torch.Tensor:
    with _autocast(model):
        return l2_normalize(model.audio_projection(feats).float())


def frame_embeddings(model: FLAM, wave: Any, sample_rate: int) -> np.ndarray:
    return _project_frames(model, frame_features(model, wave, sample_rate)).cpu().numpy()


def embed_audio(model: FLAM, wave: Any, sample_rate: int) -> np.ndarray:
    """normalize(proj(mean of the stitched pre-projection frames)) — OpenFLAM's global embedding on 10-s input."""
    feats = frame_features(model, wave, sample_rate)
    return _project_frames(model, feats.mean(0, keepdim=True))[0].cpu().numpy()


@torch.inference_mode()
def _text(model: FLAM, texts: list[str]):  # noqa: ANN202
    enc = model.tokenize(texts)
    with _autocast(model):
        t = model.encode_text(enc["input_ids"], enc["attention_mask"])
    return t.embeds.float(), t.alpha.float(), t.beta.float()


def embed_text(model: FLAM, texts: list[str]) -> np.ndarray:
    return _text(model, texts)[0].cpu().numpy()


def median_filter_frames(probs: np.ndarray, size: int) -> np.ndarray:
    """Median over `size` consecutive frames along the last axis (edges replicated); size ≤ 1 is a no-op."""
    if size <= 1:
        return probs
    if size % 2 == 0:
        raise ValueError(f"median filter size must be odd, got {size}")
    h = size // 2
    padded = np.pad(probs, [(0, 0)] * (probs.ndim - 1) + [(h, h)], mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, size, axis=-1), axis=-1)


@torch.inference_mode()
def frame_probabilities(model: FLAM, wave: Any, sample_rate: int, texts: list[str], method: str = "approximate",
                        median_filter: int = 1) -> np.ndarray:  # fmt: skip
    """[n_texts, n_frames] frame probabilities (Eq. 8), optional median filter."""
    if method not in ("approximate", "unbiased"):
        raise ValueError(f"method must be 'approximate' or 'unbiased', got {method!r}")
    emb, alpha, beta = _text(model, texts)
    frames = _project_frames(model, frame_features(model, wave, sample_rate))
    probs = frame_probability(frame_similarity(frames, emb), alpha, beta, method).cpu().numpy()
    return median_filter_frames(probs, median_filter)


def segments_from_probabilities(probs: np.ndarray, threshold: float, hop_s: float,
                                duration_s: float | None = None) -> list[list[tuple[float, float]]]:  # fmt: skip
    """Runs of frames with p ≥ threshold → [(start_s, end_s), …] per text; frame k ↔ [k, k+1)·hop_s."""
    probs = np.atleast_2d(probs)
    out = []
    for row in probs >= threshold:
        d = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        segs = []
        for a, b in zip(starts, ends, strict=True):
            end = b * hop_s if duration_s is None else min(b * hop_s, duration_s)
            segs.append((float(a * hop_s), float(end)))
        out.append(segs)
    return out


def detect(model: FLAM, wave: Any, sample_rate: int, texts: list[str], threshold: float = 0.5,
           method: str = "approximate", median_filter: int = 3) -> list[list[tuple[float, float]]]:  # fmt: skip
    probs = frame_probabilities(model, wave, sample_rate, texts, method, median_filter)
    n = np.asarray(wave).shape[-1] if not isinstance(wave, torch.Tensor) else wave.shape[-1]
    hop_s = frame_hop_samples(model.config) / model.config.frontend.sample_rate
    return segments_from_probabilities(probs, threshold, hop_s, n / sample_rate)
