"""A-weighting, frame grid and the loudness measure (synth.loudness)."""

import numpy as np
import pytest
from scipy import signal

from synth.loudness import (
    a_weight,
    a_weighting_sos,
    frame_power_db,
    measure_loudness_db,
    n_frames_for,
    span_frame_power,
)

SR = 48000


def tone(freq, amp, dur_s, sr=SR):
    t = np.arange(int(round(dur_s * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("freq", "expected_db", "tol"),
    [(1000, 0.0, 0.01), (100, -19.1, 0.1), (31.5, -39.4, 0.2), (4000, 1.0, 0.1), (10000, -2.5, 1.5)],
)
def test_a_weighting_matches_iec_table(freq, expected_db, tol):
    _, h = signal.sosfreqz(a_weighting_sos(SR), worN=[freq], fs=SR)
    assert 20 * np.log10(abs(h[0])) == pytest.approx(expected_db, abs=tol)


def test_sine_loudness_is_its_rms_level():
    x = tone(1000, 0.1, 5.0)
    # 1 kHz passes A-weighting at 0 dB: level = 20 log10(a / sqrt 2), edge frames cost < 0.05 dB
    assert measure_loudness_db(x, SR) == pytest.approx(20 * np.log10(0.1 / np.sqrt(2)), abs=0.05)


def test_loudness_ignores_silent_padding():
    x = tone(1000, 0.3, 1.0)
    padded = np.concatenate([np.zeros(12 * 1200, np.float32), x, np.zeros(SR * 3, np.float32)])
    assert measure_loudness_db(padded, SR) == pytest.approx(measure_loudness_db(x, SR), abs=0.3)
    # an RMS over the whole file would have dropped by 10*log10(4.3) = 6.3 dB
    assert 10 * np.log10(np.mean(a_weight(padded, SR) ** 2)) < measure_loudness_db(x, SR) - 6


def test_a_gain_changes_the_level_by_exactly_that_gain():
    # an event with a quiet reverb-like tail and digital silence: the old absolute -70 dBFS gate moved the
    # tail in and out of the measure with the gain; the relative gate does not
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            tone(1000, 0.2, 0.5),
            (rng.standard_normal(SR) * 3e-3 * np.exp(-np.arange(SR) / SR * 3)).astype(np.float32),
            np.zeros(SR, np.float32),
        ]
    )
    base = measure_loudness_db(x, SR)
    for g_db in (-40.0, -17.5, 0.0, 6.0, 20.0):
        y = (x.astype(np.float64) * 10 ** (g_db / 20)).astype(np.float64)
        assert measure_loudness_db(y, SR) == pytest.approx(base + g_db, abs=1e-6)

    def absolute_gate(y):  # the former rule: mean power over frames above -70 dBFS
        p = frame_power_db(y, SR)
        return 10 * np.log10(np.mean(10 ** (p[p > -70] / 10)))

    assert abs(absolute_gate(x * 10 ** (-40 / 20)) - absolute_gate(x) + 40) > 1.0  # what this test guards


def test_levels_below_the_silence_floor_are_silent():
    quiet = tone(1000, 10 ** (-72 / 20) * np.sqrt(2), 1.0)  # -72 dBFS
    assert measure_loudness_db(quiet, SR) == float("-inf")
    assert measure_loudness_db(quiet, SR, silence_db=-80.0) == pytest.approx(-72.0, abs=0.1)  # edge frames


def test_window_loudness_from_block_energies_equals_measuring_the_window():
    from synth.loudness import loudness_from_power, source_block_energies, window_loudness_db

    rng = np.random.default_rng(1)
    x = (rng.standard_normal(25 * SR) * np.repeat(rng.uniform(0.01, 0.3, 25), SR)).astype(np.float32)
    e = source_block_energies(x, SR)
    for offset in (0, 600 * 37, 15 * SR):
        w = a_weight(x, SR)[offset : offset + 10 * SR]  # the file's weighting, cut to the window
        direct = span_frame_power(w, 0, 400)
        assert window_loudness_db(e, offset, 10 * SR) == pytest.approx(loudness_from_power(direct), abs=1e-9)
        # from rest on the window alone: the filter state only matters in the first milliseconds
        assert window_loudness_db(e, offset, 10 * SR) == pytest.approx(
            measure_loudness_db(x[offset : offset + 10 * SR], SR), abs=0.01
        )
    assert (
        window_loudness_db(e, 20 * SR, 10 * SR)
        == pytest.approx(  # past the end counts as silence
            measure_loudness_db(x[20 * SR :], SR), abs=0.05
        )
    )
    with pytest.raises(ValueError, match="multiple of 600"):
        window_loudness_db(e, 601, 10 * SR)


def test_silence_is_minus_inf_and_2d_is_rejected():
    assert measure_loudness_db(np.zeros(SR, np.float32), SR) == float("-inf")
    with pytest.raises(ValueError, match="mono"):
        measure_loudness_db(np.zeros((2, SR)), SR)
    with pytest.raises(ValueError, match="mono"):
        frame_power_db(np.zeros((SR, 2)), SR)


def test_frame_grid_and_centered_windows():
    x = np.zeros(10 * SR, np.float32)
    x[10 * 1200 : 20 * 1200] = tone(1000, 0.1, 10 * 1200 / SR)
    db = frame_power_db(x, SR)
    assert len(db) == n_frames_for(len(x), 1200) == 400
    # frame i's window is [i*hop - 600, i*hop + 1800): frame 9 sees the burst start, frame 8 does not;
    # the causal filter gives exact zeros before the burst
    assert np.all(db[:9] == -200.0)
    assert db[9] > -70 and db[20] > -70
    assert db[15] == pytest.approx(20 * np.log10(0.1 / np.sqrt(2)), abs=0.01)


def test_span_power_equals_full_signal_power():
    rng = np.random.default_rng(0)
    n = 3 * SR + 77
    x = np.zeros(n)
    start, length = 40_001, 20_000
    x[start : start + length] = rng.standard_normal(length) * 0.1
    full = span_frame_power(a_weight(x, SR), 0, n_frames_for(n, 1200))
    stop = n  # the span plus everything after it (filter ring-down)
    span = span_frame_power(a_weight(x[start:stop], SR), start, n_frames_for(n, 1200))
    np.testing.assert_allclose(span, full, rtol=1e-9, atol=1e-18)
    assert len(full) == n_frames_for(n, 1200) == 121


def test_inplace_filter_equals_scipy_sosfilt():
    from synth.loudness import sosfilt_inplace

    x = np.random.default_rng(2).standard_normal(5000)
    sos = a_weighting_sos(SR)
    expected = signal.sosfilt(sos, x)
    y = x.copy()
    assert sosfilt_inplace(sos, y) is y
    np.testing.assert_array_equal(y, expected)
    view = x.copy()[::2]  # not contiguous: public fallback
    np.testing.assert_array_equal(sosfilt_inplace(sos, view), signal.sosfilt(sos, x[::2]))
    np.testing.assert_array_equal(
        a_weight(x.astype(np.float32), SR), signal.sosfilt(sos, x.astype(np.float32).astype(np.float64))
    )
