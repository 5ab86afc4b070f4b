"""Inference on any length/rate: stitching rule, 10-s equivalence, long/short input, resampling, filters, segments."""

from pathlib import Path

import numpy as np
import pytest
import soxr
import torch

from model import FLAMConfig
from model.inference import (
    make_windows,
    median_filter_frames,
    n_output_frames,
    pcm_to_float,
    prepare_waveform,
    segments_from_probabilities,
    stitch_frames,
)
from tests.model.small_flam import small_flam

SR = 48000
TEXTS = ["dog barking", "a siren wails"]


@pytest.fixture(scope="module")
def model():
    m = small_flam()
    m.inference_batch_size = 3  # exercise several batches of windows
    return m


@pytest.fixture(scope="module")
def wave():
    rng = np.random.default_rng(0)
    t = np.arange(int(23.3 * SR)) / SR
    x = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 700 * t) * (
        np.sin(2 * np.pi * 0.2 * t) > 0
    )
    return x.astype(np.float32)


def direct(model, clip):
    """Plain 10-s forward: pre-projection frames [32, C]."""
    with torch.no_grad():
        return model.audio_features(torch.from_numpy(np.ascontiguousarray(clip))[None])[0]


def test_stitch_rule_takes_each_frame_from_its_most_central_window():
    n_win = 4
    # value = window index · 100 + local frame
    feats = (torch.arange(n_win)[:, None] * 100 + torch.arange(32)[None, :]).float()[..., None]
    out = stitch_frames(feats)[:, 0]
    assert out.shape == (16 * (n_win - 1) + 32,)
    for k, v in enumerate(out.tolist()):
        j, local = divmod(int(v), 100)
        assert 16 * j + local == k  # right global position
        centre_dist = abs(local + 0.5 - 16)
        for jj in range(n_win):
            if 0 <= k - 16 * jj < 32:
                assert centre_dist <= abs(k - 16 * jj + 0.5 - 16)  # no window has it more central
    assert torch.equal(stitch_frames(feats[:1]), feats[0])


@pytest.mark.parametrize("hop", [24, 2, 32])
def test_stitch_rule_other_hops(hop):
    n_win = 5
    feats = (torch.arange(n_win)[:, None] * 100 + torch.arange(32)[None, :]).float()[..., None]
    out = stitch_frames(feats, hop)[:, 0]
    assert out.shape == (hop * (n_win - 1) + 32,)
    for k, v in enumerate(out.tolist()):
        j, local = divmod(int(v), 100)
        assert hop * j + local == k
        best = min(abs(k - hop * jj + 0.5 - 16) for jj in range(n_win) if 0 <= k - hop * jj < 32)
        assert abs(local + 0.5 - 16) == best


def test_hop_24_long_input(model, wave):
    from model.inference import frame_features

    model.inference_hop_frames = 24
    try:
        feats = frame_features(model, wave, SR)
        with pytest.raises(ValueError, match="hop_frames"):
            model.inference_hop_frames = 7
            frame_features(model, wave, SR)
    finally:
        model.inference_hop_frames = 16
    assert feats.shape[0] == 75
    w1 = direct(model, wave[360000:840000])  # second window starts at 24 frames = 7.5 s
    torch.testing.assert_close(feats[:28], direct(model, wave[:480000])[:28], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feats[28:52], w1[4:28], rtol=1e-4, atol=1e-5)


def test_windows_are_5s_hop_views():
    x = torch.arange(int(23.3 * SR), dtype=torch.float32)
    w = make_windows(x, FLAMConfig())
    assert w.shape == (4, 480000)  # windows at 0, 5, 10, 15 s (the last one zero padded past 23.3 s)
    assert w[1, 0] == 240000 and w[3, -1] == 0
    assert n_output_frames(x.numel(), FLAMConfig()) == 75  # ceil(23.3 / 0.3125)
    assert make_windows(torch.zeros(480000), FLAMConfig()).shape == (1, 480000)
    assert make_windows(torch.zeros(480001), FLAMConfig()).shape == (2, 480000)


def test_ten_second_input_equals_plain_forward(model, wave):
    clip = wave[:480000]
    with torch.no_grad():
        frames, clip_emb = model.project_audio(direct(model, clip)[None])
    got = model.frame_embeddings(clip, SR)
    assert got.shape == (32, 512)
    np.testing.assert_allclose(got, frames[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.embed_audio(clip, SR), clip_emb[0].numpy(), rtol=1e-5, atol=1e-6)
    assert np.allclose(model.frame_times(32), np.arange(32) * 0.3125)


def test_long_input_is_consistent_with_its_windows(model, wave):
    from model.inference import frame_features

    feats = frame_features(model, wave, SR)
    assert feats.shape[0] == 75
    w0, w1 = direct(model, wave[:480000]), direct(model, wave[240000:720000])
    torch.testing.assert_close(feats[:24], w0[:24], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feats[24:40], w1[8:24], rtol=1e-4, atol=1e-5)
    last = np.zeros(480000, np.float32)
    last[: wave.size - 720000] = wave[720000:]
    torch.testing.assert_close(feats[56:75], direct(model, last)[8:27], rtol=1e-4, atol=1e-5)
    p = model.frame_probabilities(wave, SR, TEXTS)
    assert p.shape == (2, 75) and ((p > 0) & (p < 1)).all()


def test_short_input_is_zero_padded(model, wave):
    short = wave[: 3 * SR]
    padded = np.zeros(480000, np.float32)
    padded[: short.size] = short
    emb = model.frame_embeddings(short, SR)
    assert emb.shape == (10, 512)
    np.testing.assert_allclose(emb, model.frame_embeddings(padded, SR)[:10], rtol=1e-5, atol=1e-6)


def test_any_rate_and_channels(model, wave):
    clip = wave[:480000]
    stereo_44k = np.stack(
        [soxr.resample(clip, SR, 44100), soxr.resample(clip, SR, 44100)]
    )  # channels × samples
    p_ref = model.frame_probabilities(soxr.resample(stereo_44k.mean(0), 44100, SR), SR, TEXTS)
    p = model.frame_probabilities(stereo_44k, 44100, TEXTS)
    np.testing.assert_allclose(p, p_ref, rtol=1e-5, atol=1e-6)
    assert p.shape == (2, 32)
    p_t = model.frame_probabilities(torch.from_numpy(clip), SR, TEXTS)  # torch input
    assert p_t.shape == (2, 32)


def test_single_text_and_methods(model, wave):
    clip = wave[:480000]
    a = model.frame_probabilities(clip, SR, ["dog"], median_filter=1)  # raw
    u = model.frame_probabilities(clip, SR, ["dog"], method="unbiased", median_filter=1)
    assert a.shape == u.shape == (1, 32)
    # β starts at −8 ⇒ unbiased ≈ approximate
    np.testing.assert_allclose(a, u, atol=5e-3)
    med = model.frame_probabilities(clip, SR, ["dog"])  # default: the 3-frame median (App. C.7)
    np.testing.assert_allclose(med, median_filter_frames(a, 3))
    assert not np.allclose(med, a)  # the filter did something on this input


def test_bad_inputs_are_clear_errors(model, wave):
    with pytest.raises(ValueError, match="method"):
        model.frame_probabilities(wave[:SR], SR, TEXTS, method="exact")
    with pytest.raises(ValueError, match="NaN"):
        model.frame_embeddings(np.full(SR, np.nan, np.float32), SR)
    with pytest.raises(ValueError, match="empty"):
        model.frame_embeddings(np.zeros(0, np.float32), SR)
    with pytest.raises(ValueError, match="channels"):
        model.frame_embeddings(np.zeros((SR, 2), np.float32), SR)
    with pytest.raises(ValueError, match="integer PCM, got dtype bool"):
        model.frame_embeddings(np.zeros((2, SR), bool), SR)
    with pytest.raises(ValueError, match="integer PCM, got dtype complex64"):
        model.frame_embeddings(np.zeros(SR, np.complex64), SR)
    with pytest.raises(ValueError, match="sample_rate"):
        model.frame_embeddings(np.zeros(SR, np.float32), 0)


DEMO = Path(__file__).resolve().parents[2] / "corpus" / "demo" / "audio"


@pytest.mark.parametrize(
    "name",
    ["supertux-data/stomp.wav", "megaglest-data/sheep1.wav"],  # stereo PCM_16, stereo PCM_U8
)
def test_integer_pcm_is_scaled_by_its_full_scale_in_every_layout(model, name):
    """Real stereo PCM files read as integers give exactly what libsndfile's float decoding gives."""
    import soundfile as sf

    ref, sr = sf.read(DEMO / name, dtype="float32", always_2d=True)  # [N, C]: libsndfile's full-scale rule
    i16, _ = sf.read(DEMO / name, dtype="int16", always_2d=True)
    i32, _ = sf.read(DEMO / name, dtype="int32", always_2d=True)
    ref, i16, i32 = ref.T, i16.T, i32.T  # channels × samples, the layout the model takes
    assert ref.shape[0] == 2 and np.abs(i16).max() > 1000  # real stereo, far above float full scale
    want = prepare_waveform(ref, sr)
    layouts = {"int16 [C, N]": i16, "int32 [C, N]": i32, "torch int16 [C, N]": torch.from_numpy(i16.copy())}
    if "U8" in sf.info(DEMO / name).subtype:
        layouts["uint8 [C, N]"] = ((i16.astype(np.int32) >> 8) + 128).astype(np.uint8)  # the file's own bytes
    for label, x in layouts.items():
        torch.testing.assert_close(prepare_waveform(x, sr), want, rtol=0, atol=0, msg=label)
    torch.testing.assert_close(prepare_waveform(i16[0], sr), prepare_waveform(ref[0], sr), rtol=0, atol=0)
    np.testing.assert_array_equal(  # [N] and [C, N] through the model, integer == float
        model.frame_probabilities_batch([i16, i16[1]], sr, TEXTS),
        model.frame_probabilities_batch([ref, ref[1]], sr, TEXTS),
    )
    with pytest.raises(ValueError, match="looks like samples × channels"):
        prepare_waveform(i16.T, sr)  # [N, C] is refused for integers as for floats


def test_pcm_full_scale_extremes():
    assert pcm_to_float(np.array([-32768, 0, 16384], np.int16)).tolist() == [-1.0, 0.0, 0.5]
    assert pcm_to_float(np.array([0, 128, 255], np.uint8)).tolist() == [-1.0, 0.0, 127 / 128]
    assert pcm_to_float(np.array([-(2**31), 2**30], np.int32)).tolist() == [-1.0, 0.5]
    assert pcm_to_float(np.array([-128, 64], np.int8)).tolist() == [-1.0, 0.5]
    assert pcm_to_float(np.array([0, 32768], np.uint16)).tolist() == [-1.0, 0.0]
    assert pcm_to_float(np.array([0.25], np.float64)).dtype == np.float32


def test_absurd_amplitude_is_a_clear_error_never_nan_probabilities(model, wave):
    clip = wave[: 3 * SR]
    msg = r"waves\[0\]: the model's output is not finite .*peak amplitude \d\.\d+e\+(19|20)\)"
    with pytest.raises(ValueError, match=msg):
        model.frame_probabilities(clip * np.float32(1e20), SR, TEXTS)
    with pytest.raises(ValueError, match=r"waves\[1\]: the model's output is not finite"):  # named in a batch
        model.frame_probabilities_batch([clip, np.stack([clip, clip]) * np.float32(1e20), clip], SR, TEXTS)
    for call in (model.frame_embeddings, model.embed_audio):
        with pytest.raises(ValueError, match="not finite"):
            call(clip * np.float32(1e20), SR)
    with pytest.raises(ValueError, match=r"beyond the float32 range \(peak \d\.\d+e\+(299|300)\)"):
        model.frame_probabilities(clip.astype(np.float64) * 1e300, SR, TEXTS)
    p = model.frame_probabilities(clip * np.float32(1e6), SR, TEXTS)  # loud but finite all the way: a result
    assert np.isfinite(p).all()


def test_texts_are_normalised_as_in_training(model, wave):
    clip = wave[:480000]
    raw = model.tokenizer(["Dog Barking!", "dog barking"])["input_ids"]
    assert raw[0] != raw[1]  # the tokenizer alone sees different texts ("!")
    want = model.frame_probabilities(clip, SR, ["dog barking"])
    np.testing.assert_array_equal(model.frame_probabilities(clip, SR, ["Dog Barking!"]), want)
    np.testing.assert_array_equal(model.frame_probabilities(clip, SR, ["  DOG\tbarking. "]), want)
    np.testing.assert_array_equal(model.embed_text(["Dog Barking!"]), model.embed_text(["dog barking"]))
    got = model.frame_probabilities_batch([clip], SR, ["«Dog barking»", "A Siren Wails."])[0]
    np.testing.assert_array_equal(got, model.frame_probabilities_batch([clip], SR, TEXTS)[0])
    assert model.detect(clip, SR, ["Dog Barking!"], 0.3) == model.detect(clip, SR, ["dog barking"], 0.3)


def test_text_empty_after_normalisation_is_a_clear_error(model, wave):
    for call in (
        lambda t: model.frame_probabilities(wave[:SR], SR, t),
        lambda t: model.frame_probabilities_batch([wave[:SR]], SR, t),
        lambda t: model.detect(wave[:SR], SR, t),
        model.embed_text,
    ):
        with pytest.raises(ValueError, match=r"texts\[1\] = ' \?! ' is empty after text normalisation"):
            call(["dog", " ?! "])
        with pytest.raises(ValueError, match=r"texts\[0\] = '' is empty"):
            call([""])


def test_median_filter():
    p = np.array([[0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]])
    np.testing.assert_array_equal(median_filter_frames(p, 3), [[0, 0, 0, 0, 1, 1, 1, 1]])
    np.testing.assert_array_equal(median_filter_frames(p, 1), p)
    with pytest.raises(ValueError, match="odd"):
        median_filter_frames(p, 2)


def test_segments_from_probabilities():
    p = np.array([[0.9, 0.9, 0.1, 0.6, 0.2, 0.7], [0.0] * 6, [1.0] * 6])
    segs = segments_from_probabilities(p, 0.5, 0.3125, duration_s=1.8)
    assert segs[0] == [(0.0, 0.625), (0.9375, 1.25), (1.5625, 1.8)]
    assert segs[1] == []
    assert segs[2] == [(0.0, 1.8)]


def test_detect_end_to_end(model, wave):
    segs = model.detect(wave, SR, TEXTS, threshold=0.0)
    assert len(segs) == 2 and segs[0] == [(0.0, pytest.approx(23.3))]


def test_audio_file_any_rate_and_channels(model, wave, tmp_path):
    import soundfile as sf

    from synth.audio import read_audio
    from synth.errors import AudioDecodeError

    stereo = np.stack([wave[: 4 * SR], 0.5 * wave[: 4 * SR]])
    x44 = np.stack([soxr.resample(c, SR, 44100) for c in stereo])
    sf.write(tmp_path / "a.flac", x44.T, 44100)
    data, sr = read_audio(tmp_path / "a.flac")  # [frames, channels]: the model takes channels × samples
    data = data.T
    assert sr == 44100 and data.shape == x44.shape
    p = model.frame_probabilities(data, sr, TEXTS)
    assert p.shape == (2, 13)  # ceil(4 / 0.3125)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(AudioDecodeError, match="bad.wav"):
        read_audio(tmp_path / "bad.wav")


@pytest.fixture(scope="module")
def mixed_batch(wave):
    """3 s at 16 kHz mono, 10 s at 44.1 kHz stereo, 27 s at 48 kHz: 1 + 1 + 5 windows."""
    rng = np.random.default_rng(1)
    long = np.concatenate([wave, 0.1 * rng.standard_normal(int(3.7 * SR)).astype(np.float32)])
    w10 = soxr.resample(wave[:480000], SR, 44100)
    return [soxr.resample(wave[: 3 * SR], SR, 16000), np.stack([w10, 0.5 * w10]), long], [16000, 44100, SR]


@pytest.fixture(scope="module")
def batch_probs(model, mixed_batch):
    assert model.inference_batch_size == 3  # chunks of 3 windows straddle the inputs (1 | 1 | 5 windows)
    return model.frame_probabilities_batch(*mixed_batch, TEXTS, median_filter=1)


def test_batch_equals_single_file_calls(model, mixed_batch, batch_probs):
    waves, rates = mixed_batch
    assert [p.shape for p in batch_probs] == [
        (2, 10),
        (2, 32),
        (2, 87),
    ]  # ceil(3/0.3125), 32, ceil(27/0.3125)
    for p, w, sr in zip(batch_probs, waves, rates, strict=True):
        single = model.frame_probabilities(w, sr, TEXTS, median_filter=1)
        np.testing.assert_allclose(p, single, rtol=1e-5, atol=1e-5)
    emb = model.frame_embeddings_batch(waves[:2], rates[:2])
    assert [e.shape for e in emb] == [(10, 512), (32, 512)]
    for e, w, sr in zip(emb, waves, rates[:2], strict=False):
        np.testing.assert_allclose(e, model.frame_embeddings(w, sr), rtol=1e-5, atol=1e-5)
    clips = model.embed_audio_batch(waves[1::-1], rates[1::-1])
    assert clips.shape == (2, 512)
    np.testing.assert_allclose(clips[0], model.embed_audio(waves[1], rates[1]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(clips[1], model.embed_audio(waves[0], rates[0]), rtol=1e-5, atol=1e-5)


def test_batch_empty_and_bad_inputs(model, wave):
    ok = wave[:SR]
    assert model.frame_probabilities_batch([], SR, TEXTS) == []
    assert model.frame_embeddings_batch([], []) == []
    assert model.embed_audio_batch([], SR).shape == (0, 512)
    cases = [
        (([ok, np.zeros(0, np.float32)], SR, TEXTS), r"waves\[1\]: wave is empty"),
        (([ok, ok, np.full(SR, np.nan, np.float32)], SR, TEXTS), r"waves\[2\]: wave contains NaN"),
        (([np.zeros((2, 2, SR), np.float32)], SR, TEXTS), r"waves\[0\]: wave must be 1-D"),
        (([ok, ok], [SR], TEXTS), "2 waves"),
        (([ok], [SR, SR], TEXTS), "1 waves"),
        (([ok], [0], TEXTS), r"waves\[0\]: sample_rate"),
        ((ok, SR, TEXTS), "list of"),
        (([ok], SR, "dog"), "texts"),
        (([ok], SR, []), "texts"),
        (([ok], SR, ["dog", 3]), r"texts\[1\]"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            model.frame_probabilities_batch(*args)
    with pytest.raises(ValueError, match="odd"):
        model.frame_probabilities_batch([ok], SR, TEXTS, median_filter=2)


class _ShapeRecorder(torch.nn.Module):
    """Runs the real audio branch and records the batch shapes it is called with."""

    def __init__(self, branch):
        super().__init__()
        self.branch, self.shapes = branch, []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.branch(x)


def test_compiled_path_pads_every_chunk_to_the_batch_size(model, mixed_batch, batch_probs):
    waves, rates = mixed_batch
    keys = set(model.state_dict())
    model.compile()  # lazy: nothing is compiled until a call
    assert model.inference_audio_branch is not model.audio_branch and set(model.state_dict()) == keys
    rec = _ShapeRecorder(model.audio_branch)
    object.__setattr__(
        model, "_compiled_audio", rec
    )  # same padding path as the compiled branch, eager inside
    try:
        model.inference_batch_size = 4
        got = model.frame_probabilities_batch(waves, rates, TEXTS, median_filter=3)
    finally:
        model.inference_batch_size = 3
        object.__setattr__(model, "_compiled_audio", None)
    assert rec.shapes == [(4, 480000), (4, 480000)]  # 7 windows → 4 + (3 + 1 padding)
    for a, b in zip(got, batch_probs, strict=True):
        np.testing.assert_allclose(a, median_filter_frames(b, 3), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_on_cpu_matches_eager(model, mixed_batch, batch_probs):
    waves, rates = mixed_batch
    model.compile()
    try:
        got = model.frame_probabilities_batch(waves, rates, TEXTS, median_filter=1)
    finally:
        object.__setattr__(model, "_compiled_audio", None)
    for a, b in zip(got, batch_probs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
