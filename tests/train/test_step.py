"""Pieces of the training step: the C.5 resampling on the device, and the text encoder's lr group."""

import numpy as np
import torch

from model.train.step import resample_augment


def test_resample_augment_band_limits_chosen_clips_only():
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(3, 48000, generator=g)
    out = resample_augment(wave, torch.tensor([0, 16000, 32000]))
    assert out.shape == wave.shape and torch.equal(out[0], wave[0])
    for row, cutoff in ((1, 8000), (2, 16000)):
        spec = np.abs(np.fft.rfft(out[row].numpy())) ** 2
        freqs = np.fft.rfftfreq(48000, 1 / 48000)
        above = spec[freqs > cutoff * 1.05].sum() / spec.sum()
        assert above < 1e-2, (row, above)  # (almost) nothing left above the intermediate Nyquist
        below = (
            spec[freqs < cutoff * 0.8].sum()
            / (np.abs(np.fft.rfft(wave[row].numpy())) ** 2)[freqs < cutoff * 0.8].sum()
        )
        assert 0.95 < below < 1.05  # the band below is kept
    assert resample_augment(wave, torch.tensor([0, 0, 0])) is wave
    assert resample_augment(wave, None) is wave
