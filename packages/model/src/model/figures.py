"""Detection figures (matplotlib, Agg backend — no display needed), used by ``model.detect`` and ``eval.run_all``.

``plot_detection``: a log-mel spectrogram (numpy STFT, 64 mel bands, ~10-ms hop; computed here, not by the model)
above one panel per text with its frame probabilities as a step curve on the model grid (frame l =
[l, l+1)·hop_s) and the events of that text (ground truth, or detected segments) as shaded spans (paper Fig. 2).
Every panel ends at the audio's duration: the model's grid is padded to whole frames, so its last frame (and any
span past the end) is cut there.
Event labels are matched to texts by ``model.text_slots.normalize_text``. Any audio length (long inputs get a
coarser spectrogram hop so the image stays ≤ 4000 columns) and any number of texts (the figure grows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model.text_slots import normalize_text  # noqa: E402

_MAX_SPEC_COLUMNS = 4000


def _mel_filterbank(
    sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters on the HTK mel scale."""
    fmax = sr / 2 if fmax is None else fmax

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / np.maximum(center - lower, 1e-9)
    down = (upper - freqs[None]) / np.maximum(upper - center, 1e-9)
    return np.maximum(0.0, np.minimum(up, down))


def _mono(wave: np.ndarray) -> np.ndarray:
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim == 2:  # [channels, samples] or [samples, channels]: average over the shorter axis
        x = x.mean(axis=0 if x.shape[0] <= x.shape[1] else 1)
    elif x.ndim != 1:
        raise ValueError(f"wave must be 1-D or 2-D, got shape {x.shape}")
    return np.nan_to_num(x)


def log_mel_spectrogram(wave: np.ndarray, sample_rate: int, n_mels: int = 64, hop_s: float = 0.01) -> tuple[np.ndarray, float]:  # fmt: skip
    """(dB log-mel [n_mels, columns], column width in seconds). Column i covers samples [i, i+1)·N/columns of
    the N input samples, so columns × width = N / sample_rate exactly: the image ends where the audio does.
    Each column is a Hann window of ≈ 32 ms (a power of two) centred on its span (zeros beyond the ends); the
    width is ≈ ``hop_s`` and grows for long inputs so that there are at most 4000 columns."""
    x = _mono(wave)
    sr = int(sample_rate)
    if sr <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    n = x.size
    n_fft = 1 << max(6, int(round(math.log2(0.032 * sr))))
    hop = max(1, int(round(hop_s * sr)), math.ceil(n / _MAX_SPEC_COLUMNS))
    n_cols = max(1, round(n / hop))
    width = n / n_cols  # samples per column (≈ hop; not an integer in general)
    xp = np.pad(x, (n_fft // 2, n_fft - n_fft // 2))  # window start in xp = its centre in x
    centres = np.minimum(((np.arange(n_cols) + 0.5) * width).astype(np.int64), max(n - 1, 0))
    offsets = np.arange(n_fft)
    window = np.hanning(n_fft + 1)[:-1]
    power = np.zeros((n_cols, n_fft // 2 + 1))
    for a in range(0, n_cols, 512):  # blocks keep memory flat for long inputs
        frames = xp[centres[a : a + 512, None] + offsets]
        power[a : a + 512] = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    mel = _mel_filterbank(sr, n_fft, n_mels) @ power.T
    return 10.0 * np.log10(np.maximum(mel, 1e-10)), width / sr


def plot_detection(
    wave: np.ndarray,
    sample_rate: int,
    probs: np.ndarray,
    texts: Sequence[str],
    ground_truth: Sequence[tuple[float, float, str]],
    path: str | Path,
    hop_s: float = 0.3125,
    title: str | None = None,
    threshold: float | None = 0.5,
    duration_s: float | None = None,
) -> Path:
    """Spectrogram + per-text probability curves with shaded ground-truth spans (Fig. 2). Returns ``path``.

    ``probs`` [K, T] (K = len(texts)); ``ground_truth``: (onset_s, offset_s, label) triples, shaded in the
    panel of the text with the same normalised label (others are ignored); ``threshold`` draws a dotted line
    (None: none). Every panel ends at the audio's duration (``duration_s``, default: the length of ``wave``;
    for an empty ``wave`` the frame grid's): the model's frame grid is padded to whole frames (2.35 s → 8 frames
    = 2.5 s), so the last frame's step and any span past the end are cut there, and frames that start after
    it are not drawn."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1 and len(texts) == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[0] != len(texts):
        raise ValueError(f"probs must be [len(texts)={len(texts)}, T], got shape {p.shape}")
    n_texts, n_frames = p.shape
    x = _mono(wave)
    if duration_s is None:
        duration_s = x.size / float(sample_rate) if x.size else n_frames * hop_s
    duration = max(float(duration_s), 1e-3)
    shown = min(n_frames, max(1, math.ceil(duration / hop_s - 1e-9)))  # frames that start before the end

    spec, spec_hop = log_mel_spectrogram(x, sample_rate)
    spec_end = min(spec.shape[1] * spec_hop, duration) if x.size else duration  # = the samples' duration
    height = 2.6 + 0.75 * max(n_texts, 1)
    fig, axes = plt.subplots(
        1 + n_texts, 1, figsize=(10, height), sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": [3] + [1] * n_texts},
    )  # fmt: skip
    axes = axes[:, 0]
    top = max(float(spec.max()), -100.0)
    axes[0].imshow(
        spec, origin="lower", aspect="auto", cmap="magma", vmin=top - 80.0, vmax=top,
        extent=(0.0, spec_end, 0, spec.shape[0]), interpolation="nearest",
    )  # fmt: skip
    axes[0].set_ylabel("mel band")
    axes[0].set_title(title if title is not None else "log-mel spectrogram and frame probabilities")

    gt: dict[str, list[tuple[float, float]]] = {}
    for onset, offset, label in ground_truth:
        gt.setdefault(normalize_text(str(label)), []).append((float(onset), float(offset)))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    edges = np.minimum(np.arange(shown + 1) * hop_s, duration)  # the last frame ends with the audio
    for i, (ax, text) in enumerate(zip(axes[1:], texts, strict=True)):
        color = colors[i % len(colors)]
        for onset, offset in gt.get(normalize_text(text), []):
            onset, offset = max(onset, 0.0), min(offset, duration)
            if offset > onset:
                ax.axvspan(onset, offset, color=color, alpha=0.25, lw=0)
        if n_frames:
            ax.stairs(p[i, :shown], edges, color=color, lw=1.5)
        if threshold is not None:
            ax.axhline(threshold, color="0.4", lw=0.8, ls=":")
        ax.set_ylim(-0.02, 1.02)
        ax.set_yticks([0, 1])
        label = text if len(text) <= 40 else text[:37] + "..."
        ax.text(0.005, 0.93, label, transform=ax.transAxes, va="top", ha="left", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})  # fmt: skip
    axes[-1].set_xlim(0.0, duration)
    axes[-1].set_xlabel("time (s)")
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 100) -> Path:
    """Lay out, write (creating the folder) and close ``fig``; returns the path."""
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
