"""Text normalisation, stable ids, frame labels and 5×B slot building."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from model.loss import sed_and_prior_loss
from model.text_slots import PAD_ID, build_text_slots, frame_activity, normalize_text, text_id, text_ids


def test_normalize_text():
    assert normalize_text("  Dog   Barks!\n") == "dog barks"
    assert normalize_text("«A cat meows…»") == "a cat meows"
    assert normalize_text("dog's bark, loud.") == "dog's bark, loud"  # inner punctuation kept
    assert normalize_text("ＤＯＧ\tbark") == "dog bark"  # NFKC full-width → ASCII
    assert normalize_text(" ?! ") == ""
    with pytest.raises(ValueError, match="must be a str"):
        normalize_text(None)


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=40))
@example("J\u030c")  # "J" + combining caron: NFKC leaves it, its lower case composes to "ǰ"
@example("\u0130 \u03aa\u0301 \u1fbc\u0345")  # İ (2-code-point lower case), Greek with combining marks
@example("!\u0301a?")  # edge punctuation in front of a combining mark
def test_normalize_text_is_idempotent(text):
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert text_id(once) == text_id(text)  # ids of slot texts (already normalised) equal the raw texts' ids


def test_text_id_is_stable_and_non_negative():
    assert text_id("dog barking") == 1421066467956148118  # pinned: blake2b-8 of the UTF-8 text, 63 bits
    assert text_id("Dog  barking.") == text_id("dog barking")
    assert text_id("dog barking") != text_id("dog barks")
    ids = text_ids(["a", "b", "dog barking"])
    assert ids.dtype == torch.int64 and (ids >= 0).all()
    # another interpreter with another hash seed gives the same id (Python's hash() would not)
    code = "from model.text_slots import text_id; print(text_id('Dog barking!'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == text_id("dog barking")


def test_frame_activity_rules():
    # 10 s, 4 frames of 2.5 s: frame l covers [2.5·l, 2.5·(l+1))
    assert frame_activity([[2.5, 5.0]], 10.0, 4).tolist() == [False, True, False, False]  # touching ≠ overlap
    assert frame_activity([[2.4, 2.6]], 10.0, 4).tolist() == [True, True, False, False]
    assert frame_activity([[9.0, 12.0], [-1.0, 0.1]], 10.0, 4).tolist() == [True, False, False, True]
    assert frame_activity([[0.0, 3.0]], 10.0, 4, min_overlap=0.5).tolist() == [True, False, False, False]
    assert frame_activity([[0.0, 3.8]], 10.0, 4, min_overlap=0.5).tolist() == [True, True, False, False]
    assert frame_activity([[3.0, 3.0]], 10.0, 4).tolist() == [False] * 4  # empty segment
    # relabel-style end (b+1)·hop/sr with float rounding does not leak into the next frame
    end = 25 * 1200 / 48000 * (1 + 1e-15)
    assert frame_activity([[0.0, end]], 10.0, 16).tolist() == [True] + [False] * 15
    for bad, msg in [
        ([[2.0, 1.0]], "invalid segment"),
        ([[0.0, float("nan")]], "invalid segment"),
        ([[1.0]], "onset, offset"),
    ]:
        with pytest.raises(ValueError, match=msg):
            frame_activity(bad, 10.0, 4)
    with pytest.raises(ValueError, match="n_frames"):
        frame_activity([], 10.0, 0)


def clips_example():
    return [
        [
            {"text": "Dog barking.", "segments": [[0.0, 2.0]]},
            {"text": "car horn", "segments": [[5.0, 6.0]]},
            {"text": "dog  barking", "segments": [[7.6, 8.0]]},  # same normalised text: merged
        ],
        [{"text": "Car horn!", "segments": [[0.0, 10.0]]}],
        [],
    ]


def test_build_text_slots_dedupes_and_pads():
    slots = build_text_slots(clips_example(), duration=10.0, n_frames=4)
    assert slots.texts == ["dog barking", "car horn"] + [""] * 13  # 5 × B slots, first-occurrence order
    assert slots.text_mask.tolist() == [True, True] + [False] * 13
    dog, car = text_id("dog barking"), text_id("car horn")
    assert slots.text_ids[:2].tolist() == [dog, car] and (slots.text_ids[2:] == PAD_ID).all()
    assert slots.event_ids.tolist() == [[dog, car], [car, PAD_ID], [PAD_ID, PAD_ID]]
    ef = slots.event_frames
    assert ef.shape == (3, 2, 4) and ef.dtype == torch.bool
    assert ef[0, 0].tolist() == [True, False, False, True]  # union of [0, 2] and [7.6, 8.0]
    assert ef[0, 1].tolist() == [False, False, True, False]
    assert ef[1, 0].tolist() == [True] * 4 and not ef[2].any()
    assert slots.n_unique_texts == 2 and slots.n_dropped_texts == 0


def test_overflow_policies():
    clips = [[{"text": f"a{i}", "segments": [[0, 1]]} for i in range(4)], [{"text": "b0", "segments": []}]]
    dropped = build_text_slots(clips, 10.0, 8, n_slots=3)
    assert dropped.texts == ["a0", "b0", "a1"]  # round-robin over clips: every clip keeps a text
    assert dropped.n_dropped_texts == 2 and dropped.n_unique_texts == 5
    assert text_id("a3") in dropped.event_ids[0].tolist()  # events stay, only the slot is dropped
    grown = build_text_slots(clips, 10.0, 8, n_slots=3, overflow="grow")
    assert len(grown.texts) == 5 and grown.text_mask.all()
    with pytest.raises(ValueError, match="5 unique texts do not fit in 3"):
        build_text_slots(clips, 10.0, 8, n_slots=3, overflow="error")
    with pytest.raises(ValueError, match="max_events=2"):
        build_text_slots(clips, 10.0, 8, max_events=2)


def test_bad_records_name_the_clip():
    with pytest.raises(ValueError, match="clip 1 event 0"):
        build_text_slots([[], [{"segments": [[0, 1]]}]], 10.0, 4)
    with pytest.raises(ValueError, match=r"clip 0 event 0 \('x'\): invalid segment"):
        build_text_slots([[{"text": "x", "segments": [[3, 1]]}]], 10.0, 4)
    with pytest.raises(ValueError, match="empty after normalisation"):
        build_text_slots([[{"text": " ... ", "segments": []}]], 10.0, 4)
    with pytest.raises(ValueError, match="2 durations for 1 clips"):
        build_text_slots([[]], [10.0, 5.0], 4)


def test_slots_feed_the_loss():
    slots = build_text_slots(clips_example(), duration=[10.0, 10.0, 10.0], n_frames=4)
    g = torch.Generator().manual_seed(0)
    frames = torch.nn.functional.normalize(torch.randn(3, 4, 8, generator=g), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(15, 8, generator=g), dim=-1)
    alpha, beta = torch.full((15,), 10.0), torch.full((15,), -8.0, requires_grad=True)
    l_sed, l_prior = sed_and_prior_loss(
        frames, texts, alpha, beta, slots.text_ids, slots.text_mask, slots.event_ids, slots.event_frames
    )
    # prior target: dog 2 / 12 frames, car 1 + 4 = 5 / 12 frames
    shares = torch.tensor([2 / 12, 5 / 12])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.full((2,), -8.0), shares)
    assert l_prior.item() == pytest.approx(expected.item(), rel=1e-6)
    assert np.isfinite(l_sed.item()) and l_sed.item() > 0
