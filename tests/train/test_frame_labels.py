"""The one frame-label rule (`model.text_slots.frame_activity`) on the trainer's 32-frame grid (0.3125 s per
frame), through the loader's own collate path, at its edges: touching, sub-frame events, clip end."""

import numpy as np
import pytest

from model.text_slots import frame_activity
from model.train.config import DataConfig
from model.train.data import collate

HOP = 10.0 / 32  # 0.3125 s


def labels(segments, duration=10.0):
    clip = {"events": [{"text": "dog", "segments": segments, "tag_swapped": False}], "duration": duration,
            "wave": np.zeros(480000, np.float32), "key": "k"}  # fmt: skip
    b = collate([], [clip], DataConfig(), 32)
    frames = b["event_frames"][0, 0].numpy()
    assert (frames == frame_activity(segments, duration, 32)).all()  # the loader uses the shared rule
    return np.flatnonzero(frames).tolist()


@pytest.mark.parametrize(
    "segments,expected",
    [
        ([[0.0, HOP]], [0]),  # ends exactly on a frame edge: the next frame only touches it
        ([[HOP, 2 * HOP]], [1]),  # starts on an edge
        ([[0.40, 0.45]], [1]),  # sub-frame event inside frame 1
        ([[HOP - 0.01, HOP + 0.01]], [0, 1]),  # sub-frame event across an edge: both frames
        ([[9.9, 10.0]], [31]),  # clip end
        ([[9.95, 12.0]], [31]),  # past the clip end: clipped
        ([[-3.0, 0.1]], [0]),  # before the start: clipped
        ([[10.0, 11.0]], []),  # entirely after the end
        ([[2.0, 2.0]], []),  # zero length
        ([[0.0, 1.0], [1.0, 2.0]], [0, 1, 2, 3, 4, 5, 6]),  # touching segments of one text: one run
    ],
)
def test_frame_label_edges(segments, expected):
    assert labels(segments) == expected


def test_short_clip_labels_stay_on_the_10_s_grid():
    """A record with duration 5 s (audio zero-padded to 10 s): frames keep 0.3125 s, events end at 5 s."""
    from model.train.data import clip_segments

    ev = clip_segments([{"text": "dog", "segments": [[4.0, 7.0]], "tag_swapped": False}], 5.0)
    assert ev[0]["segments"] == [[4.0, 5.0]]
    assert labels(ev[0]["segments"]) == list(range(12, 16))  # 4.0/0.3125 = 12.8 → frames 12..15
