"""Mixture rendering: fades, gains, clipping guard, labels, determinism, AudioCache, dev-corpus smoke."""

import numpy as np
import pytest

from synth.flac import decode_flac, encode_flac, quantize_pcm16
from synth.loudness import measure_loudness_db
from synth.relabel import RelabelConfig
from synth.render import apply_fades, fade_in_ramp, render_mixture
from synth.source_cache import AudioCache
from synth.spec import BackgroundSpec, EventSpec, MixtureConfig, MixtureSpec, SourcePool, sample_spec

SR = 48000
CFG = MixtureConfig()


def noise(seconds, amp=0.1, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * amp).astype(np.float32)


def event(id_, pieces, gain_db=0.0, caption=None, level_db=-30.0):
    return EventSpec(
        id=id_,
        caption=caption or f"text {id_}",
        tags=[id_],
        source_type="sfx",
        mode="single" if len(pieces) == 1 else "split",
        onset=pieces[0][1],
        snr_db=10.0,
        level_db=level_db,
        loudness_db=None if gain_db is None else level_db - gain_db,
        gain_db=gain_db,
        pieces=[list(p) for p in pieces],
    )


def spec_of(events, background=None):
    return MixtureSpec(seed=0, index=0, sample_rate=SR, duration=10.0, background=background, events=events)


def test_fade_ramp_shape_is_raised_cosine_and_complementary():
    r = fade_in_ramp(480)
    k = np.arange(480)
    np.testing.assert_allclose(r, 0.5 - 0.5 * np.cos(np.pi * (k + 0.5) / 480), atol=1e-7)
    np.testing.assert_allclose(r + r[::-1], 1.0, atol=1e-6)
    assert np.all(np.diff(r) > 0) and 0 < r[0] < 1e-4


def test_every_piece_edge_is_faded_exactly():
    src = {"dc": np.full(SR * 3, 0.5, np.float32)}
    pieces = [(0.0, 1.0, 1.0), (1.0, 2.5, 0.5)]  # split piece edges at 1.0, 2.0, 2.5, 3.0 s
    out = render_mixture(spec_of([event("dc", pieces)]), src.__getitem__, CFG).audio
    r = 0.5 * fade_in_ramp(480)
    for start, stop in [(SR, 2 * SR), (int(2.5 * SR), 3 * SR)]:
        np.testing.assert_array_equal(out[start : start + 480], r)
        np.testing.assert_array_equal(out[stop - 480 : stop], r[::-1])
        assert np.all(out[start + 480 : stop - 480] == 0.5)
    assert np.all(out[:SR] == 0) and np.all(out[2 * SR : int(2.5 * SR)] == 0) and np.all(out[3 * SR :] == 0)
    short = np.ones(100, np.float32)
    apply_fades(short, 480)  # shorter than two fades: each fade takes half the piece
    np.testing.assert_allclose(short[:50], fade_in_ramp(50)) and np.testing.assert_allclose(
        short[50:], fade_in_ramp(50)[::-1]
    )


def test_gains_and_the_snr_over_the_background():
    srcs = {"bg": noise(20, 0.05, 1), "ev": noise(2, 0.3, 2)}
    bg_l, ev_l = measure_loudness_db(srcs["bg"], SR), measure_loudness_db(srcs["ev"], SR)
    bg = BackgroundSpec("bg", 3.0, -55.0, bg_l, -55.0 - bg_l)
    ev = event("ev", [(0.0, 4.0, 2.0)], gain_db=-43.0 - ev_l, level_db=-43.0)
    out = render_mixture(spec_of([ev], bg), srcs.__getitem__, CFG)
    bg_only = render_mixture(spec_of([], bg), srcs.__getitem__, CFG).audio
    np.testing.assert_allclose(
        bg_only, srcs["bg"][3 * SR : 13 * SR] * np.float32(10 ** ((-55.0 - bg_l) / 20)), rtol=1e-6
    )
    assert measure_loudness_db(bg_only, SR) == pytest.approx(-55.0, abs=0.1)
    ev_only = out.audio - bg_only
    assert measure_loudness_db(ev_only, SR) - measure_loudness_db(bg_only, SR) == pytest.approx(12.0, abs=0.2)
    assert out.clip_scale == 1.0 and out.dropped_events == 0
    assert out.event_labels == [
        {
            "text": "text ev",
            "tags": ["ev"],
            "source_id": "ev",
            "source_ids": ["ev"],
            "segments": [[3.975, 6.025]],
        }
    ]


def test_missing_gain_measures_loudness_on_load():
    srcs = {"ev": noise(1, 0.2, 3)}
    cache = AudioCache({"ev": "mem://ev"}, load_fn=lambda path, sr: srcs[path.split("//")[1]])
    out = render_mixture(spec_of([event("ev", [(0.0, 2.0, 1.0)], gain_db=None, level_db=-30.0)]), cache, CFG)
    assert measure_loudness_db(out.audio, SR) == pytest.approx(-30.0, abs=0.3)
    # a plain callable without .loudness_db gives the same mixture
    plain = render_mixture(
        spec_of([event("ev", [(0.0, 2.0, 1.0)], gain_db=None, level_db=-30.0)]), srcs.__getitem__, CFG
    )
    np.testing.assert_array_equal(plain.audio, out.audio)


def test_clipping_guard_scales_the_mix_and_keeps_labels():
    srcs = {"a": noise(1, 0.5, 4), "b": noise(1, 0.5, 5)}
    evs = [event("a", [(0.0, 1.0, 1.0)], gain_db=6.0), event("b", [(0.0, 1.5, 1.0)], gain_db=6.0)]
    out = render_mixture(spec_of(evs), srcs.__getitem__, CFG)
    loose = render_mixture(spec_of(evs), srcs.__getitem__, MixtureConfig(max_peak=100.0))
    assert out.clip_scale < 1.0 and loose.clip_scale == 1.0
    assert np.abs(out.audio).max() <= CFG.max_peak
    np.testing.assert_allclose(out.audio, loose.audio * np.float32(out.clip_scale), atol=1e-6)
    assert out.event_labels == loose.event_labels
    pcm = quantize_pcm16(out.audio)
    assert np.abs(pcm.astype(np.int32)).max() <= 32767
    np.testing.assert_array_equal(pcm, np.rint(out.audio.astype(np.float64) * 32768))  # nothing clipped


def test_silent_event_is_dropped_and_same_texts_merge():
    srcs = {"s": np.zeros(SR, np.float32), "a": noise(1, 0.1, 6), "b": noise(1, 0.1, 7)}
    evs = [
        event("s", [(0.0, 0.0, 1.0)], gain_db=0.0),
        event("a", [(0.0, 1.0, 1.0)], gain_db=0.0, caption="dog barks"),
        event("b", [(0.0, 2.0, 1.0)], gain_db=0.0, caption="dog barks"),
    ]
    out = render_mixture(spec_of(evs), srcs.__getitem__, CFG)
    assert out.dropped_events == 1
    assert [lab["text"] for lab in out.event_labels] == ["dog barks"]
    assert out.event_labels[0]["segments"] == [[0.975, 3.025]] and out.event_labels[0]["source_ids"] == [
        "a",
        "b",
    ]


def test_short_decoded_source_is_padded_and_noted():
    srcs = {"a": noise(0.5, 0.1, 8)}
    out = render_mixture(spec_of([event("a", [(0.0, 1.0, 0.6)], gain_db=0.0)]), srcs.__getitem__, CFG)
    assert out.notes == {"source_short_padded": 1}


def test_bad_specs_are_rejected():
    srcs = {"a": noise(1)}
    with pytest.raises(ValueError, match="outside the clip"):
        render_mixture(spec_of([event("a", [(0.0, 9.5, 1.0)])]), srcs.__getitem__, CFG)
    with pytest.raises(ValueError, match="sample rate"):
        cfg16 = MixtureConfig(sample_rate=16000, relabel=RelabelConfig(sample_rate=16000))
        render_mixture(spec_of([]), srcs.__getitem__, cfg16)
    with pytest.raises(ValueError, match="relabel.sample_rate"):
        MixtureConfig(sample_rate=16000)
    off_grid = BackgroundSpec("a", 0.001, -55.0, None, None)  # 48 samples: not on the 600-sample grid
    with pytest.raises(ValueError, match="grid"):
        render_mixture(spec_of([], off_grid), {"a": noise(12)}.__getitem__, CFG)
    with pytest.raises(KeyError, match="unknown source id"):
        AudioCache({})("nope")


def pool_rows(n_events=12):
    rng = np.random.default_rng(0)
    rows = [
        {
            "id": f"e{i}",
            "kind": "event",
            "split": "train",
            "duration_s": float(rng.uniform(0.2, 4.0)),
            "source_type": "sfx" if i % 3 else "general",
            "captions": [f"event {i}", f"sound {i}"],
            "tags": [f"t{i}"],
        }
        for i in range(n_events)
    ]
    return rows + [
        {"id": "bg", "kind": "background", "split": "train", "duration_s": 12.0, "captions": ["amb"]}
    ]


def synthetic_loader(sr):
    def load(path, target_sr):
        i = sum(map(ord, path))
        rng = np.random.default_rng(i)
        dur = 12.0 if path == "bg" else float(np.random.default_rng(0).uniform(0.2, 4.0, 100)[int(path[1:])])
        x = rng.standard_normal(int(dur * target_sr)).astype(np.float32) * 0.1
        return x * np.hanning(len(x)).astype(np.float32) if path != "bg" else x

    return load


def test_rendering_a_spec_twice_gives_identical_bytes():
    rows = pool_rows()
    pool = SourcePool.from_manifest(rows)
    cache = AudioCache({r["id"]: r["id"] for r in rows}, load_fn=synthetic_loader(SR), max_bytes=64 << 20)
    for i in range(4):
        spec = sample_spec(pool, CFG, 5, i)
        a = render_mixture(spec, cache, CFG)
        b = render_mixture(MixtureSpec.from_json(spec.to_json()), cache, CFG)
        assert a.audio.tobytes() == b.audio.tobytes() and a.event_labels == b.event_labels
        assert encode_flac(a.audio) == encode_flac(b.audio)
        assert len(a.event_labels) + a.dropped_events >= len({e.caption for e in spec.events}) - 0
    assert cache.hits > 0 and cache.misses <= len(rows)


def test_audio_cache_is_lru_bounded_by_bytes():
    calls = []

    def load(path, sr):
        calls.append(path)
        return np.zeros(1000, np.float32)  # 4000 bytes each

    cache = AudioCache({k: k for k in "abc"}, max_bytes=9000, load_fn=load)
    cache("a"), cache("b"), cache("a"), cache("c")  # c evicts b (least recent)
    assert len(cache) == 2 and cache.nbytes == 8000 and cache.evictions == 1
    cache("a"), cache("b")
    assert calls == ["a", "b", "c", "b"]
    with pytest.raises(ValueError):
        cache("a")[0] = 1.0  # cached arrays are read-only


def test_dev_corpus_mixtures(dev_corpus):
    from synth.ingest import IngestConfig, ingest_corpus

    res = ingest_corpus(dev_corpus, cfg=IngestConfig(verify_decode=False))
    pool = SourcePool.from_manifest(res.table, "train")
    cache = AudioCache.from_manifest(res.table)
    for i in range(3):
        spec = sample_spec(pool, CFG, 0, i)
        out = render_mixture(spec, cache, CFG)
        assert out.audio.dtype == np.float32 and len(out.audio) == 10 * SR
        assert np.abs(out.audio).max() <= CFG.max_peak
        assert len(out.event_labels) >= 1 or out.dropped_events == len(spec.events)
        for lab in out.event_labels:
            segs = lab["segments"]
            assert all(0 <= a < b <= 10.0 for a, b in segs)
            assert all(segs[k][1] < segs[k + 1][0] for k in range(len(segs) - 1))
        y, sr = decode_flac(encode_flac(out.audio))
        assert sr == SR and np.abs(y - out.audio).max() <= 0.5 / 32768 + 1e-9


def test_cached_energy_path_matches_filtering_the_whole_track():
    from synth.loudness import a_weight, block_energies, frame_power_from_blocks
    from synth.render import build_event_track, event_block_energies

    rng = np.random.default_rng(9)
    x = (np.cumsum(rng.standard_normal(5 * SR)) * 1e-3 + rng.standard_normal(5 * SR) * 0.05).astype(
        np.float32
    )
    x += 0.02  # a DC offset: the worst case for the slow 20.6 Hz poles
    w = a_weight(x, SR)
    csum = np.concatenate([[0.0], np.cumsum(w * w)])
    # long split pieces, the 2nd and 3rd butting (ring-down overlaps the next head), a short 4th piece,
    # and a last piece running to the clip end (ring-down cut at n)
    pieces = [
        (1000, 100_000, 60_000),
        (61_000, 200_000, 30_000),
        (91_000, 230_000, 30_000),
        (121_000, 262_000, 5_000),
        (130_000, 450_000, 30_000),
    ]
    n = 10 * SR
    span0, track, _ = build_event_track(x, pieces, 0.7, 480)
    j0, fast = event_block_energies(track, span0, pieces, csum, 0.7, SR, 4800, n, 600)
    j1, exact = event_block_energies(track, span0, pieces, None, 0.7, SR, 4800, n, 600)
    stop = min(n, span0 + len(track) + 4800)
    jw, whole = block_energies(
        a_weight(np.concatenate([track, np.zeros(4800, np.float32)]), SR)[: stop - span0], span0, 600
    )
    assert j0 == j1 == jw and len(fast) == len(exact) == len(whole)
    # per-piece filtering keeps 0.1 s of ring-down per piece (beyond it: < -100 dB of the piece level)
    np.testing.assert_allclose(exact, whole, rtol=1e-6, atol=1e-9 * whole.max())
    np.testing.assert_allclose(fast, exact, rtol=1e-5, atol=1e-9 * exact.max())
    pf, pe = (frame_power_from_blocks(e, j0, 400) for e in (fast, exact))
    on = pe > 1e-12
    assert np.abs(10 * np.log10(pf[on] / pe[on])).max() < 1e-3


def test_cache_and_plain_loader_give_the_same_labels():
    rows = pool_rows()
    pool = SourcePool.from_manifest(rows)
    load = synthetic_loader(SR)
    cache = AudioCache({r["id"]: r["id"] for r in rows}, load_fn=load)
    plain = {r["id"]: load(r["id"], SR) for r in rows}
    for i in range(6):
        spec_a, spec_b = sample_spec(pool, CFG, 8, i), sample_spec(pool, CFG, 8, i)  # each measures its gains
        a, b = render_mixture(spec_a, cache, CFG), render_mixture(spec_b, plain.__getitem__, CFG)
        assert a.event_labels == b.event_labels and a.audio.tobytes() == b.audio.tobytes()
        assert spec_a.to_json() == spec_b.to_json() and spec_a.background.gain_db is not None
    assert len(cache._energy) > 0 and len(cache._blocks) > 0  # the cached relabel and window paths were taken
    assert cache.nbytes == sum(v.nbytes for v in cache._items.values()) + sum(
        v.nbytes for memo in (cache._energy, cache._blocks) for v in memo.values()
    )


def test_background_level_is_set_on_the_window_used():
    # a background whose first 10 s are 10 dB louder than its last 10 s: whichever window a mixture uses
    # sits at the reference level, and each event sits snr_db above that window
    loud, quiet = noise(10, 0.1, 11), noise(10, 0.1 * 10 ** (-10 / 20), 12)
    srcs = {"bg": np.concatenate([loud, quiet]), "ev": noise(1, 0.2, 13)}
    for offset in (0.0, 10.0):
        bg = BackgroundSpec("bg", offset, -55.0, None, None)
        ev = event("ev", [(0.0, 4.0, 1.0)], gain_db=None, level_db=-55.0 + 12.0)
        spec = spec_of([ev], bg)
        out = render_mixture(spec, srcs.__getitem__, CFG)
        bg_only = render_mixture(
            spec_of([], BackgroundSpec("bg", offset, -55.0, None, None)), srcs.__getitem__, CFG
        )
        assert measure_loudness_db(bg_only.audio, SR) == pytest.approx(-55.0, abs=0.05)
        ev_track = out.audio - bg_only.audio
        # (a 1-s event on the clip's frame grid gains two quarter-covered edge frames: up to ~0.2 dB)
        assert measure_loudness_db(ev_track, SR) - measure_loudness_db(bg_only.audio, SR) == pytest.approx(
            12.0, abs=0.3
        )
        # the spec now says what was measured, and re-renders the same bytes from JSON
        assert spec.background.gain_db == pytest.approx(-55.0 - spec.background.loudness_db)
        window = srcs["bg"][int(offset * SR) : int(offset * SR) + 10 * SR]
        assert spec.background.loudness_db == pytest.approx(measure_loudness_db(window, SR), abs=0.01)
        again = render_mixture(MixtureSpec.from_json(spec.to_json()), srcs.__getitem__, CFG)
        assert again.audio.tobytes() == out.audio.tobytes()
    # the whole-file level sits between the two windows: gains from it would miss them by 2.6 and 7.4 dB
    whole = measure_loudness_db(srcs["bg"], SR)
    assert measure_loudness_db(quiet, SR) + 7 < whole < measure_loudness_db(loud, SR) - 2


def test_silent_background_window_contributes_nothing_and_is_noted():
    srcs = {
        "bg": np.concatenate([np.zeros(10 * SR, np.float32), noise(10, 0.1, 14)]),
        "ev": noise(1, 0.2, 15),
    }
    ev = event("ev", [(0.0, 4.0, 1.0)], gain_db=0.0)
    out = render_mixture(spec_of([ev], BackgroundSpec("bg", 0.0, -55.0, None, None)), srcs.__getitem__, CFG)
    assert out.notes == {"background_silent": 1} and np.all(out.audio[: 4 * SR] == 0)


def test_long_event_source_is_measured_on_the_part_used():
    x = np.concatenate([noise(10, 0.3, 16), noise(10, 0.01, 17)])  # 20-s "event": loud half, quiet half
    ev = event("ev", [(10.0, 0.0, 10.0)], gain_db=None, level_db=-30.0)  # uses the quiet half
    out = render_mixture(spec_of([ev]), {"ev": x}.__getitem__, CFG)
    assert measure_loudness_db(out.audio, SR) == pytest.approx(-30.0, abs=0.1)
    assert ev.loudness_db == pytest.approx(measure_loudness_db(x[10 * SR :], SR))


def test_threshold_relative_to_the_event_makes_labels_independent_of_the_gain():
    # a decaying tone: the dbfs threshold labels more of it at a higher gain, the event-relative one does not
    t = np.arange(3 * SR) / SR
    x = (np.sin(2 * np.pi * 1000 * t) * np.exp(-t * 4)).astype(np.float32) * 0.5
    loud = measure_loudness_db(x, SR)

    def label(level_db, cfg):
        ev = event("x", [(0.0, 1.0, 3.0)], gain_db=level_db - loud, level_db=level_db)
        return render_mixture(spec_of([ev]), {"x": x}.__getitem__, cfg).event_labels[0]["segments"]

    rel = MixtureConfig(relabel=RelabelConfig(threshold_ref="event", threshold_db=-33.0))
    assert label(-49.0, CFG) != label(-25.0, CFG)
    assert label(-49.0, rel) == label(-25.0, rel) == label(-37.0, rel)
    assert label(-37.0, rel) == label(-37.0, CFG)  # at the median SNR the two rules agree (-70 = -37 - 33)
    with pytest.raises(ValueError, match="threshold_ref"):
        RelabelConfig(threshold_ref="background")
