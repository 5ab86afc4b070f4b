"""In-memory FLAC encode/decode (synth.flac)."""

import io

import numpy as np
import pytest
import soundfile as sf

from synth.flac import decode_flac, encode_flac, quantize_pcm16


def test_roundtrip_is_lossless_on_16_bit_values():
    x = (np.random.default_rng(1).standard_normal(48000) * 0.2).astype(np.float32)
    data = encode_flac(x, 48000)
    info = sf.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
        "FLAC",
        "PCM_16",
        48000,
        1,
        48000,
    )
    pcm, _ = sf.read(io.BytesIO(data), dtype="int16")
    np.testing.assert_array_equal(pcm, quantize_pcm16(x))
    y, sr = decode_flac(data)
    assert sr == 48000 and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=0.5 / 32768 + 1e-9)


def test_bytes_are_deterministic():
    x = np.sin(np.arange(96000) / 7.0).astype(np.float32) * 0.5
    assert encode_flac(x) == encode_flac(x.copy())


def test_out_of_range_values_clip_instead_of_wrapping():
    pcm = quantize_pcm16(np.array([1.5, -1.5, 1.0, -1.0, 0.0], np.float32))
    assert pcm.tolist() == [32767, -32768, 32767, -32768, 0]


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="NaN"):
        encode_flac(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="mono"):
        encode_flac(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="compression_level"):
        encode_flac(np.zeros(10, np.float32), compression_level=2.0)
