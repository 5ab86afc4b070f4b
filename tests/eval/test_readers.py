"""eval.readers: the published strong-label formats (fixtures written here), counted skips, round trips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import sed_scores_eval

from eval.readers import (
    Event,
    events_from_mixture_record,
    read_audioset_label_names,
    read_audioset_strong_tsv,
    read_desed_tsv,
    read_durations_tsv,
    read_ground_truth_tsv,
    read_maestro_soft,
    read_mixture_records,
    read_urbansed_dir,
    write_durations_tsv,
    write_ground_truth_tsv,
)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_event_record():
    ev = Event("clip1", 0.5, 1.25, "dog barking")
    assert Event.from_dict(ev.to_dict()) == ev
    assert ev.to_dict() == {"filename": "clip1", "onset": 0.5, "offset": 1.25, "label": "dog barking"}
    assert ev.as_tuple() == (0.5, 1.25, "dog barking")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.onset = 0.0


def test_desed_rows_empty_clips_and_counted_skips(tmp_path):
    tsv = write(
        tmp_path / "desed.tsv",
        "filename\tonset\toffset\tevent_label\n"
        "a.wav\t0.5\t2.0\tAlarm_bell_ringing\n"
        "a.wav\t3\t4.5\tSpeech\n"
        "empty.wav\t\t\t\n"  # a clip without events
        "b.wav\tx\t2\tDog\n"  # bad onset
        "b.wav\t3\t2\tDog\n"  # offset before onset
        "b.wav\t2\t2\tDog\n"  # zero length
        "b.wav\t1\t2\t\n"  # times without label
        "b.wav\t1\n"  # too few columns
        "b.wav\t4\t5\tRunning_water\n"
        "weak.wav\t\t\tCat\n"  # weak label: clip left out
        "weak.wav\t1\t2\tCat\n",
    )
    res = read_desed_tsv(tsv)
    assert [e.as_tuple() for e in res.events if e.filename == "a"] == [
        (0.5, 2.0, "alarm bell ringing"),
        (3.0, 4.5, "speech"),
    ]
    assert res.clips == ["a", "empty", "b"]
    gt = res.ground_truth()
    assert gt["empty"] == [] and gt["b"] == [(4.0, 5.0, "running water")] and "weak" not in gt
    assert res.skipped == {
        "bad_time": 1,
        "offset_before_onset": 1,
        "zero_length": 1,
        "empty_label": 1,
        "bad_columns": 1,
        "weak_label": 1,
        "weak_clip": 1,
    }


def test_desed_without_header_and_bad_files(tmp_path):
    res = read_desed_tsv(write(tmp_path / "x.tsv", "c1.flac\t0\t1\tCat\n"))
    assert res.events == [Event("c1", 0.0, 1.0, "cat")]
    with pytest.raises(FileNotFoundError):
        read_desed_tsv(tmp_path / "missing.tsv")
    with pytest.raises(ValueError, match="lacks the columns"):
        read_desed_tsv(write(tmp_path / "h.tsv", "filename\tonset\tevent_label\nx\t0\tCat\n"))
    (tmp_path / "bin.tsv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_desed_tsv(tmp_path / "bin.tsv")


@pytest.mark.parametrize(
    "names_text",
    [
        'mid,display_name\n/m/0bt9lr,Dog\n/m/01yrx,"Cat, domestic"\n',
        'index,mid,display_name\n0,/m/0bt9lr,Dog\n1,/m/01yrx,"Cat, domestic"\n',
        "/m/0bt9lr\tDog\n/m/01yrx\tCat, domestic\n",
    ],
    ids=["mid_csv", "class_labels_indices", "tsv"],
)
def test_audioset_label_names_formats(tmp_path, names_text):
    names = read_audioset_label_names(write(tmp_path / "names.csv", names_text))
    assert names == {"/m/0bt9lr": "Dog", "/m/01yrx": "Cat, domestic"}


def test_audioset_label_names_without_mids(tmp_path):
    with pytest.raises(ValueError, match="no 'mid, display_name'"):
        read_audioset_label_names(write(tmp_path / "n.csv", "a,b\nc,d\n"))


def test_audioset_strong(tmp_path):
    tsv = write(
        tmp_path / "as.tsv",
        "segment_id\tstart_time_seconds\tend_time_seconds\tlabel\n"
        "Yabc_30000\t0.0\t1.5\t/m/0bt9lr\n"
        "Yabc_30000\t2.0\t3.0\t/m/01yrx\n"
        "Yabc_30000\t2.0\t3.0\t/m/zzzz\n"  # MID without a display name
        "Ydef_0\t1\tnan\t/m/0bt9lr\n"  # bad time
        "Ydef_0\t4\t5\tSpeech_synthesizer\n"  # a display name already
        "\t1\t2\t/m/0bt9lr\n",  # no segment id
    )
    res = read_audioset_strong_tsv(tsv, {"/m/0bt9lr": "Dog", "/m/01yrx": "Cat, domestic"})
    assert [e.as_tuple() for e in res.events] == [
        (0.0, 1.5, "dog"),
        (2.0, 3.0, "cat, domestic"),
        (4.0, 5.0, "speech synthesizer"),
    ]
    assert res.clips == ["Yabc_30000", "Ydef_0"]
    assert res.skipped == {"unknown_label": 1, "bad_time": 1, "empty_filename": 1}


def test_audioset_strong_posneg_rows(tmp_path):
    tsv = write(
        tmp_path / "posneg.tsv",
        "segment_id\tstart_time_seconds\tend_time_seconds\tlabel\tpresent\n"
        "Y1_0\t0\t1\t/m/0bt9lr\tPRESENT\n"
        "Y2_0\t0\t1\t/m/0bt9lr\tNOT_PRESENT\n",
    )
    res = read_audioset_strong_tsv(tsv, {"/m/0bt9lr": "Dog"})
    assert res.events == [Event("Y1_0", 0.0, 1.0, "dog")]
    assert res.clips == ["Y1_0", "Y2_0"] and res.skipped == {"not_present": 1}


def test_urbansed_dir(tmp_path):
    d = tmp_path / "annotations"
    write(d / "train" / "soundscape_1.txt", "0.5\t2.25\tcar_horn\n3.0\t4.0\tDog_bark\nbad line here too\n")
    write(d / "train" / "soundscape_2.txt", "")  # no events
    write(d / "soundscape_3.txt", "1 2 siren\n5\t4\tsiren\n")
    res = read_urbansed_dir(d)
    assert sorted(res.clips) == ["soundscape_1", "soundscape_2", "soundscape_3"]
    assert [e.as_tuple() for e in res.events if e.filename == "soundscape_1"] == [
        (0.5, 2.25, "car horn"),
        (3.0, 4.0, "dog bark"),
    ]
    assert res.ground_truth()["soundscape_3"] == [(1.0, 2.0, "siren")]
    assert res.ground_truth()["soundscape_2"] == []
    assert res.skipped == {"bad_columns": 1, "offset_before_onset": 1}
    with pytest.raises(FileNotFoundError):
        read_urbansed_dir(tmp_path / "nope")


MAESTRO_ROWS = [
    ("cafe_1-000000-001000.wav", 0.0, 1.0, "people_talking", 0.8),
    ("cafe_1-000000-001000.wav", 1.0, 2.0, "people_talking", 0.6),
    ("cafe_1-000000-001000.wav", 2.0, 3.0, "people_talking", 0.4),
    ("cafe_1-000000-001000.wav", 3.0, 4.0, "people_talking", 0.9),
    ("cafe_1-000000-001000.wav", 0.0, 1.0, "footsteps", 0.5),  # 0.5 is not > 0.5
    ("cafe_1-000000-001000.wav", 9.0, 10.0, "cutlery_and_dishes", 1.0),
]


def test_maestro_soft_tsv(tmp_path):
    lines = ["filename\tonset\toffset\tevent_label\tconfidence"]
    lines += ["\t".join(map(str, r)) for r in MAESTRO_ROWS]
    lines += ["cafe_1-000000-001000.wav\t4\t5\tfootsteps\t1.5", "cafe_1-000000-001000.wav\t4\t5\tfootsteps"]
    res = read_maestro_soft(write(tmp_path / "maestro_real_validation.tsv", "\n".join(lines) + "\n"))
    assert res.skipped == {"bad_prob": 1, "bad_columns": 1}
    assert res.clips == ["cafe_1-000000-001000"]
    assert res.durations == {"cafe_1-000000-001000": 10.0}
    assert res.labels == ["cutlery and dishes", "footsteps", "people talking"]
    assert [e.as_tuple() for e in res.hard_events(0.5)] == [
        (0.0, 2.0, "people talking"),  # contiguous segments merged
        (3.0, 4.0, "people talking"),
        (9.0, 10.0, "cutlery and dishes"),
    ]
    t = res.segment_targets(1.0)["cafe_1-000000-001000"]
    assert t.shape == (10, 3)
    np.testing.assert_allclose(t[:5, 2], [0.8, 0.6, 0.4, 0.9, 0.0])
    np.testing.assert_allclose(t[:, 1], [0.5] + [0.0] * 9)
    gt = res.to_result().ground_truth()
    assert gt["cafe_1-000000-001000"][0] == (0.0, 2.0, "people talking")


def test_maestro_soft_alias_header_and_original_layout(tmp_path):
    tsv = write(
        tmp_path / "m.tsv",
        "filename\tonset\toffset\tevent_label\tsoft_label\nr1.wav\t0\t1\tbirds_singing\t0.7\n",
    )
    assert read_maestro_soft(tsv).hard_events() == [Event("r1", 0.0, 1.0, "birds singing")]
    d = tmp_path / "development_annotation"
    write(
        d / "cafe_restaurant" / "cafe_1.txt",
        "0.0\t1.0\tpeople talking\t0.8\n1.0\t2.0\tpeople talking\t0.2\nx\t1\n",
    )
    write(d / "city_center" / "city_2.txt", "0.0\t1.0\tcar\t1.0\n")
    res = read_maestro_soft(d)
    assert res.clips == ["cafe_1", "city_2"] and res.skipped == {"bad_columns": 1}
    assert [e.as_tuple() for e in res.hard_events()] == [(0.0, 1.0, "people talking"), (0.0, 1.0, "car")]
    one = read_maestro_soft(d / "city_center" / "city_2.txt")
    assert one.hard_events() == [Event("city_2", 0.0, 1.0, "car")]


def test_mixture_record_events():
    rec = {
        "key": "mix-0001",
        "sample_rate": 48000,
        "duration": 8.0,
        "events": [
            {
                "text": "  A Dog barks! ",
                "tags": ["dog"],
                "source_id": "s1",
                "segments": [[0.5, 1.0], [7.5, 9.0]],
            },
            {"text": "Rain", "tags": [], "source_id": "s2", "segments": [[8.5, 9.5]]},
        ],
        "spec": {},
    }
    assert events_from_mixture_record("mix-0001", rec) == [
        Event("mix-0001", 0.5, 1.0, "a dog barks"),
        Event("mix-0001", 7.5, 8.0, "a dog barks"),  # cut at the duration; rain lies past it
    ]
    with pytest.raises(ValueError, match="not \\[onset, offset\\]"):
        events_from_mixture_record("k", {"duration": 1.0, "events": [{"text": "x", "segments": [[1]]}]})
    bad = {"key": "bad", "duration": 10.0, "events": [{"text": "x", "segments": [[2.0, 1.0]]}]}
    res = read_mixture_records([rec, bad, {"key": "nodur", "events": []}])
    assert res.clips == ["mix-0001"] and res.durations == {"mix-0001": 8.0}
    assert len(res.events) == 2 and res.skipped == {"bad_record": 2}


def test_ground_truth_and_durations_round_trip(tmp_path):
    events = [
        Event("c1", 0.1, 2.5, "dog barking"),
        Event("c1", 3.0, 4.0, "snake_case text"),
        Event("c2", 0.0, 1 / 3, "x"),
    ]
    write_ground_truth_tsv(events, tmp_path / "gt.tsv", clips=["c1", "c2", "silent"])
    res = read_ground_truth_tsv(tmp_path / "gt.tsv")
    assert res.events == events  # exact floats; underscores kept in our own format
    assert res.clips == ["c1", "c2", "silent"] and res.ground_truth()["silent"] == []
    assert not res.skipped
    # sed_scores_eval reads the same file
    assert sed_scores_eval.io.read_ground_truth_events(tmp_path / "gt.tsv")["c2"] == [[0.0, 1 / 3, "x"]]

    write_durations_tsv({"c1": 10.0, "c2": 9.5, "silent": 10.0}, tmp_path / "d.tsv")
    assert read_durations_tsv(tmp_path / "d.tsv").durations == {"c1": 10.0, "c2": 9.5, "silent": 10.0}
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files
    with pytest.raises(ValueError):
        write_durations_tsv({"c": 0.0}, tmp_path / "bad.tsv")


def test_durations_bad_rows(tmp_path):
    tsv = write(
        tmp_path / "d.tsv", "filename\tduration\na.wav\t10\nb.wav\t-1\nc.wav\tten\n\t3\na.wav\t9\nd\n"
    )
    res = read_durations_tsv(tsv)
    assert res.durations == {"a": 10.0}
    assert res.skipped == {"bad_duration": 2, "empty_filename": 1, "duplicate_clip": 1, "bad_columns": 1}
