"""Front end vs an independent numpy STFT/mel reference; Slaney filterbank properties; SpecAugment (freq only)."""

import numpy as np
import pytest
import torch

from model.config import HTSAT_PRESETS, FrontEndConfig
from model.frontend import (
    LogMel,
    Spectrogram,
    dft_kernels,
    freq_spec_augment,
    hz_to_mel_slaney,
    mel_to_hz_slaney,
    slaney_mel_filterbank,
)
from model.htsat import HTSAT

FE = FrontEndConfig()


def numpy_logmel(x: np.ndarray) -> np.ndarray:
    """Reference: reflect pad n_fft/2, periodic Hann frames, rfft power, Slaney mel, 10·log10(max(·,1e-10))."""
    n_fft, hop = FE.n_fft, FE.hop_length
    xp = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (len(xp) - n_fft) // hop
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([xp[i * hop : i * hop + n_fft] * win for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = power @ slaney_mel_filterbank(FE.sample_rate, n_fft, FE.n_mels, FE.fmin, FE.fmax).astype(np.float64)
    return 10 * np.log10(np.maximum(mel, 1e-10))


def test_slaney_scale_known_values():
    assert hz_to_mel_slaney(1000.0) == pytest.approx(15.0)
    assert hz_to_mel_slaney(60.0) == pytest.approx(0.9)  # linear part: 3 mels per 200 Hz
    assert mel_to_hz_slaney(3.0) == pytest.approx(200.0)
    hz = np.array([0.0, 50.0, 999.0, 1000.0, 4000.0, 14000.0, 24000.0])
    np.testing.assert_allclose(mel_to_hz_slaney(hz_to_mel_slaney(hz)), hz, rtol=1e-12, atol=1e-9)
    # log part: 27 mels per factor 6.4 above 1 kHz
    assert hz_to_mel_slaney(6400.0) - hz_to_mel_slaney(1000.0) == pytest.approx(27.0)


def test_filterbank_properties():
    fb = slaney_mel_filterbank(48000, 1024, 64, 50.0, 14000.0)
    assert fb.shape == (513, 64) and fb.dtype == np.float32
    assert (fb >= 0).all()
    freqs = np.linspace(0, 24000, 513)
    edges = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(50.0), hz_to_mel_slaney(14000.0), 66))
    peaks = []
    for i in range(64):
        nz = np.flatnonzero(fb[:, i] > 0)
        assert len(nz) > 0
        # support strictly inside the triangle's edges (50 Hz .. 14 kHz overall)
        assert freqs[nz[0]] > edges[i] and freqs[nz[-1]] < edges[i + 2]
        col = fb[nz, i]
        p = int(np.argmax(col))  # unimodal: rises then falls
        assert (np.diff(col[: p + 1]) >= 0).all() and (np.diff(col[p:]) <= 0).all()
        peaks.append(freqs[nz[p]])
        # Slaney area normalisation: peak height 2/(f_{i+2}-f_i) ⇒ area in Hz ≈ 1 for wide filters
        assert col.max() <= 2 / (edges[i + 2] - edges[i]) + 1e-9
        if edges[i + 2] - edges[i] > 20 * 46.875:
            assert fb[:, i].sum() * 46.875 == pytest.approx(1.0, rel=0.03)
    assert (np.diff(peaks) >= 0).all()
    assert freqs[np.flatnonzero(fb.sum(1) > 0)[0]] >= 50 and freqs[np.flatnonzero(fb.sum(1) > 0)[-1]] <= 14000
    with pytest.raises(ValueError, match="fmax"):
        slaney_mel_filterbank(48000, 1024, 64, 50.0, 30000.0)


def test_logmel_matches_numpy_reference():
    rng = np.random.default_rng(0)
    t = np.arange(48000) / 48000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(48000)).astype(np.float32)
    x[:4800] = 0.0  # silence exercises the 1e-10 clamp region
    ours = LogMel(FE)(Spectrogram(FE)(torch.from_numpy(x)[None]))[0].numpy()
    ref = numpy_logmel(x)
    assert ours.shape == ref.shape == (101, 64)
    # dB differences are float32 rounding only, except near the clamp floor
    loud = ref > -60
    np.testing.assert_allclose(ours[loud], ref[loud], atol=2e-3)
    assert np.abs(ours - ref).max() < 1.0


def test_stft_equals_torchlibrosa_style_conv_kernels():
    """The DFT kernels we verify imported checkpoints against give the same power as torch.stft."""
    x = torch.randn(1, 24000)
    real, imag = (torch.from_numpy(k) for k in dft_kernels(1024))
    xp = torch.nn.functional.pad(x[:, None], (512, 512), mode="reflect")
    conv_power = torch.conv1d(xp, real, stride=480) ** 2 + torch.conv1d(xp, imag, stride=480) ** 2
    ours = Spectrogram(FE)(x)
    torch.testing.assert_close(ours, conv_power[0].T[None], rtol=1e-3, atol=1e-2)


def test_ten_seconds_give_1001_frames_and_bn_over_mel_bins():
    m = HTSAT(HTSAT_PRESETS["small"]).eval()
    wave = torch.randn(1, 480000) * 0.1
    raw = m.logmel_extractor(m.spectrogram_extractor(wave))
    assert raw.shape == (1, 1001, 64)
    with torch.no_grad():
        m.bn0.running_mean.copy_(torch.arange(64.0))
        m.bn0.running_var.fill_(4.0)
        m.bn0.weight.fill_(2.0)
    normed = m.log_mel(wave)
    expected = (raw - torch.arange(64.0)) / torch.sqrt(torch.tensor(4.0 + 1e-5)) * 2.0 + m.bn0.bias
    torch.testing.assert_close(normed, expected, rtol=1e-5, atol=1e-4)


def test_freq_spec_augment_masks_whole_mel_bands_only():
    torch.manual_seed(0)
    x = torch.randn(64, 101, 64) + 10
    y = freq_spec_augment(x, width=8, stripes=2)
    zero = y == 0
    # a band is dropped for all time frames or none (frequency-only, never time masking)
    assert (zero.all(1) == zero.any(1)).all()
    per_clip = zero.all(1).sum(1)
    assert per_clip.max() <= 2 * 7 and per_clip.sum() > 0
    kept = ~zero
    assert torch.equal(y[kept], x[kept])


def test_spec_augment_only_in_training():
    m = HTSAT(HTSAT_PRESETS["small"])
    wave = torch.randn(4, 480000) * 0.1
    m.eval()
    assert torch.equal(m.log_mel(wave), m.log_mel(wave))
    m.train()
    torch.manual_seed(1)
    assert (m.log_mel(wave) == 0).any()
