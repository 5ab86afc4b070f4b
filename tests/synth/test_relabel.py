"""RMS relabeling (App. C.4): frame post-processing, signal-level segments, merging per text."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth.relabel import (
    RelabelConfig,
    drop_short_runs,
    fill_gaps,
    frames_to_segments,
    merge_labels_by_text,
    merge_segments,
    postprocess_frames,
    relabel_event,
    runs,
)
from synth.render import apply_fades

SR, HOP = 48000, 1200


def frames(n, *spans):
    a = np.zeros(n, bool)
    for s, e in spans:
        a[s:e] = True
    return a


def as_runs(a):
    return [tuple(int(v) for v in r) for r in runs(a)]


def test_gaps_shorter_than_10_frames_are_filled():
    a = frames(200, (10, 30), (35, 55), (64, 70), (80, 90), (100, 110))  # gaps 5, 9, 10, 10
    assert as_runs(fill_gaps(a, 10)) == [(10, 70), (80, 90), (100, 110)]
    # leading / trailing negatives are not "between positives"
    assert as_runs(fill_gaps(frames(50, (3, 5)), 10)) == [(3, 5)]


def test_single_frame_blip_dropped_only_when_event_has_more_than_10_positives():
    many = frames(200, (10, 21), (100, 101))  # 11 + 1 positives, blip 79 frames away (not filled)
    assert as_runs(postprocess_frames(many)) == [(10, 21)]
    few = frames(200, (10, 19), (100, 101))  # 9 + 1 = 10 positives: kept
    assert as_runs(postprocess_frames(few)) == [(10, 19), (100, 101)]
    two = frames(200, (10, 30), (100, 102))  # a 2-frame run is not "shorter than 2"
    assert as_runs(postprocess_frames(two)) == [(10, 30), (100, 102)]
    assert as_runs(drop_short_runs(frames(40, (0, 1), (5, 20)), 2, 10)) == [(5, 20)]


def test_rule_lengths_are_seconds_on_the_40_hz_grid_and_configurable():
    cfg = RelabelConfig()
    assert (cfg.fill_gap_frames, cfg.min_run_frames, cfg.min_run_if_more_than) == (10, 2, 10)  # 25-ms frames
    # the paper's "50 Hz" reading: 10 frames = 200 ms, 2 frames = 40 ms, still on our 25-ms grid
    fifty = RelabelConfig(fill_gap_s=0.2, min_run_s=0.04, min_run_if_more_than_s=0.2)
    assert (fifty.fill_gap_frames, fifty.min_run_frames, fifty.min_run_if_more_than) == (8, 2, 8)
    a = frames(200, (10, 30), (39, 60))  # a 9-frame (225 ms) gap
    assert as_runs(postprocess_frames(a, cfg)) == [(10, 60)]
    assert as_runs(postprocess_frames(a, fifty)) == [(10, 30), (39, 60)]
    with pytest.raises(ValueError, match="fill_gap_s"):
        RelabelConfig(fill_gap_s=-0.1)
    with pytest.raises(ValueError, match="48000"):
        relabel_event(np.ones(SR, np.float32), 16000, cfg)  # win/hop count samples at 48 kHz


def test_blip_near_event_is_merged_by_gap_filling_first():
    a = frames(200, (10, 30), (35, 36))
    assert as_runs(postprocess_frames(a)) == [(10, 36)]


def test_frames_to_segments_uses_the_grid_and_clips():
    a = frames(400, (0, 2), (39, 121), (398, 400))
    assert frames_to_segments(a, HOP, SR, 10.0) == [(0.0, 0.05), (0.975, 3.025), (9.95, 10.0)]
    assert frames_to_segments(frames(5, (3, 5)), HOP, SR, 0.11) == [(0.075, 0.11)]


def tone_bursts(spans, amp=0.1, n=10 * SR):
    x = np.zeros(n, np.float32)
    for f0, f1 in spans:
        t = np.arange((f1 - f0) * HOP) / SR
        b = (amp * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
        apply_fades(b, 480)
        x[f0 * HOP : f1 * HOP] = b
    return x


def test_tone_bursts_with_5_and_15_frame_gaps():
    # windows reach half a hop beyond each frame: a burst on frames [a, b) is active on [a-1, b+1).
    # Silent gap of 5 frames -> 3 inactive frames (filled); 15 frames -> 13 inactive frames (kept).
    x = tone_bursts([(40, 80), (85, 120), (135, 160)])
    assert relabel_event(x, SR) == [(0.975, 3.025), (3.35, 4.025)]


def test_threshold_is_absolute_minus_70_db():
    # a 1 kHz sine of amplitude a has A-weighted power level 20 log10(a) - 3.01 dB
    loud = tone_bursts([(100, 140)], amp=10 ** (-63 / 20))  # -66 dB: active
    quiet = tone_bursts([(100, 140)], amp=10 ** (-70 / 20))  # -73 dB: inactive
    # the edge frames' windows hold < 1/4 of the burst energy (< -72 dB): inactive at -70, active at -90
    assert relabel_event(loud, SR) == [(2.5, 3.5)]
    assert relabel_event(quiet, SR) == []
    assert relabel_event(np.zeros(SR, np.float32), SR) == []
    assert relabel_event(quiet, SR, RelabelConfig(threshold_db=-80.0)) == [(2.5, 3.5)]
    assert relabel_event(quiet, SR, RelabelConfig(threshold_db=-90.0)) == [(2.475, 3.525)]


def test_bad_input():
    with pytest.raises(ValueError, match="mono"):
        relabel_event(np.zeros((2, 100)), SR)
    with pytest.raises(ValueError, match="win - hop even"):
        RelabelConfig(win=2401)


def test_merge_segments_overlapping_and_touching():
    assert merge_segments([(2.0, 3.0), (0.0, 1.0), (1.0, 1.5), (2.5, 4.0), (5.0, 5.0)]) == [
        (0.0, 1.5),
        (2.0, 4.0),
    ]


def test_same_text_labels_are_merged():
    labels = [
        {"text": "dog barks", "tags": ["dog"], "source_id": "a", "segments": [(0.0, 1.0)]},
        {"text": "car horn", "tags": ["car"], "source_id": "b", "segments": [(0.5, 0.9)]},
        {
            "text": "dog barks",
            "tags": ["dog", "bark"],
            "source_id": "c",
            "segments": [(1.0, 2.0), (3.0, 4.0)],
        },
    ]
    out = merge_labels_by_text(labels)
    assert [o["text"] for o in out] == ["dog barks", "car horn"]
    assert out[0]["segments"] == [[0.0, 2.0], [3.0, 4.0]]
    assert out[0]["tags"] == ["dog", "bark"] and out[0]["source_ids"] == ["a", "c"]


segment = st.tuples(st.integers(0, 399), st.integers(1, 40)).map(
    lambda t: (t[0] * 0.025, (t[0] + t[1]) * 0.025)
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.lists(segment, max_size=6)), max_size=6))
def test_merged_labels_never_overlap_or_touch(items):
    labels = [{"text": t, "tags": [], "source_id": str(i), "segments": s} for i, (t, s) in enumerate(items)]
    out = merge_labels_by_text(labels)
    assert len({o["text"] for o in out}) == len(out)
    for o in out:
        segs = o["segments"]
        assert all(a < b for a, b in segs)
        assert all(segs[i][1] < segs[i + 1][0] for i in range(len(segs) - 1))
        # coverage is preserved: every input segment lies inside one output segment
        for lab in labels:
            if lab["text"] == o["text"]:
                for a, b in lab["segments"]:
                    assert any(x <= a and b <= y for x, y in segs)
