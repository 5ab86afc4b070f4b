"""Log-mel front end (LAION-CLAP / OpenFLAM): STFT power → Slaney mel → dB → BatchNorm over mel bins.

Matches the released OpenFLAM front end: n_fft 1024, hop 480, periodic Hann, center=True with reflect
padding (1001 frames per 10 s at 48 kHz), power = re² + im², Slaney mel filterbank (64 bins, 50–14000 Hz,
area-normalised), 10·log10(clamp(·, 1e-10)) without top_db clipping. The STFT runs through `torch.stft`
(FFT) instead of torchlibrosa's conv1d with DFT kernels — the same numbers up to float rounding, cheaper.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model.config import FrontEndConfig

# Slaney mel scale constants (Auditory Toolbox; librosa htk=False)
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel_slaney(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, mel)


def mel_to_hz_slaney(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of `hz_to_mel_slaney`."""
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, hz)


def slaney_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters with Slaney area normalisation, shape [n_fft//2+1, n_mels] (= librosa mel(...).T)."""
    if not 0 <= fmin < fmax <= sr / 2:
        raise ValueError(
            f"mel range must satisfy 0 <= fmin < fmax <= sr/2, got fmin={fmin}, fmax={fmax}, sr={sr}"
        )
    fft_freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    mel_pts = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_pts[2 : n_mels + 2] - mel_pts[:n_mels]))[:, None]
    return weights.T.astype(np.float32)


def periodic_hann(n: int) -> torch.Tensor:
    """Periodic Hann window (scipy/librosa `get_window('hann', n, fftbins=True)`)."""
    return torch.hann_window(n, periodic=True, dtype=torch.float64).float()


def dft_kernels(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """torchlibrosa's windowed DFT conv kernels [n_fft//2+1, 1, n_fft] (real, imag) — used only to check imports."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    win = periodic_hann(n_fft).double().numpy()
    ang = 2 * np.pi * k * n / n_fft
    return (np.cos(ang) * win)[:, None, :].astype(np.float32), (-np.sin(ang) * win)[:, None, :].astype(
        np.float32
    )


class Spectrogram(nn.Module):
    """Power STFT [B, T] → [B, n_frames, n_fft//2+1] (center=True, reflect pad, periodic Hann)."""

    def __init__(self, cfg: FrontEndConfig) -> None:
        super().__init__()
        self.n_fft, self.hop = cfg.n_fft, cfg.hop_length
        self.register_buffer("window", periodic_hann(cfg.n_fft), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            wave.float(), self.n_fft, self.hop, self.n_fft, self.window,
            center=True, pad_mode="reflect", return_complex=True,
        )  # fmt: skip
        return torch.view_as_real(spec).pow(2).sum(-1).transpose(1, 2)


class LogMel(nn.Module):
    """Power spectrogram → Slaney mel → 10·log10(clamp(·, amin)) (no top_db clipping)."""

    def __init__(self, cfg: FrontEndConfig) -> None:
        super().__init__()
        fb = slaney_mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        self.register_buffer("melW", torch.from_numpy(fb), persistent=False)  # [n_fft//2+1, n_mels]
        self.amin = cfg.amin

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return power_to_db(power @ self.melW, self.amin)


def power_to_db(mel: torch.Tensor, amin: float = 1e-10) -> torch.Tensor:
    """10·log10(max(mel, amin)), ref = 1, no top_db."""
    return 10.0 * torch.log10(torch.clamp(mel, min=amin))


def freq_spec_augment(x: torch.Tensor, width: int, stripes: int) -> torch.Tensor:
    """Frequency-only SpecAugment: zero `stripes` random mel bands of width U{0..width-1} per clip. x: [B, T, F]."""
    if width <= 0 or stripes <= 0:
        return x
    b, _, f = x.shape
    widths = torch.randint(0, width, (b, stripes, 1), device=x.device)
    starts = (torch.rand(b, stripes, 1, device=x.device) * (f - widths)).long()
    bins = torch.arange(f, device=x.device)
    drop = ((bins >= starts) & (bins < starts + widths)).any(1)  # [B, F]
    return x.masked_fill(drop[:, None, :], 0.0)
