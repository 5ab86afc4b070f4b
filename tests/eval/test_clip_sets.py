"""eval.clip_sets: readers on fixture CSVs with real small audio files; missing files are counted, not raised."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from eval.clip_sets import (
    audiocaps_stems,
    load_clip_set,
    read_audiocaps,
    read_clotho,
    read_esc50,
    read_labelled_csv,
    read_urbansound8k,
    read_vggsound,
)


def _wav(path: Path, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(1600, dtype=np.float32), 16000, format=fmt)
    return path


def _csv(path: Path, rows: list[list], header: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def test_clotho(tmp_path):
    audio = tmp_path / "evaluation"
    _wav(audio / "a, b.wav")
    _wav(audio / "c.wav")
    head = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
    rows = [
        ["a, b.wav", "A dog barks.", "dog", "", "barking", "a dog"],
        ["c.wav", "Rain falls", "rain", "rain", "rain", "rain"],
        ["missing.wav", "x", "y", "z", "u", "v"],
        ["empty.wav", "", "", "", "", ""],
    ]
    s = read_clotho(_csv(tmp_path / "clotho_captions_evaluation.csv", rows, head), audio)
    assert [p.name for p, _ in s.items] == ["a, b.wav", "c.wav"]
    assert s.items[0][1] == ["A dog barks.", "dog", "barking", "a dog"]
    assert s.skipped == {"missing_audio": 1, "no_captions": 1}
    paths, texts, index = s.flatten()
    assert len(paths) == 2 and len(texts) == 9 and index.tolist() == [0] * 4 + [1] * 5


def test_audiocaps_grouping_and_naming_variants(tmp_path):
    audio = tmp_path / "test"
    _wav(audio / "abc_30.wav")
    _wav(audio / "sub" / "Ydef_0.000_10.000.flac", "FLAC")
    _wav(audio / "103.wav")  # named by an audiocap_id
    (audio / "vid_5.mp4").write_bytes(b"not audio")
    head = ["audiocap_id", "youtube_id", "start_time", "caption"]
    rows = [
        [1, "abc", 30, "a man talks"],
        [2, "abc", 30, "a man speaks"],
        [3, "def", 0, "birds chirp"],
        [4, "gone", 10, "nothing here"],
        [5, "vid", 5, "video only"],
        [103, "ghi", 20, "engine idles"],
        [6, "bad", "x", "bad start"],
    ]
    s = read_audiocaps(_csv(tmp_path / "test.csv", rows, head), audio)
    got = {p.name: caps for p, caps in s.items}
    assert got == {
        "abc_30.wav": ["a man talks", "a man speaks"],
        "Ydef_0.000_10.000.flac": ["birds chirp"],
        "103.wav": ["engine idles"],
    }
    assert s.skipped == {"missing_audio": 1, "unsupported_format": 1, "bad_row": 1}
    assert s.n_rows == 7
    assert audiocaps_stems("x", 30.0)[:3] == ["x_30", "x_000030", "x_30000"]


def test_esc50_folds_and_esc10(tmp_path):
    audio = tmp_path / "audio"
    head = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    rows = [
        ["1-1-A-0.wav", 1, 0, "dog", "True", 1, "A"],
        ["1-2-A-1.wav", 1, 1, "rooster", "True", 2, "A"],
        ["2-3-A-2.wav", 2, 2, "crying_baby", "False", 3, "A"],
        ["2-4-A-0.wav", 2, 0, "dog", "True", 4, "A"],
        ["5-5-A-2.wav", 5, 2, "crying_baby", "False", 5, "A"],
    ]
    for r in rows[:4]:
        _wav(audio / r[0])
    meta = _csv(tmp_path / "meta" / "esc50.csv", rows, head)
    s = read_esc50(meta, audio)
    assert s.class_names == ["dog", "rooster", "crying_baby"]
    assert [c for _, c in s.items] == [0, 1, 2, 0]
    assert s.skipped == {"missing_audio": 1}
    s2 = read_esc50(meta, audio, folds=2)
    assert [(p.name, c) for p, c in s2.items] == [("2-3-A-2.wav", 2), ("2-4-A-0.wav", 0)]
    assert s2.class_names == s.class_names and not s2.skipped  # the fold filter is not a skip
    s10 = read_esc50(meta, audio, esc10=True)
    assert s10.class_names == ["dog", "rooster"] and s10.labels.tolist() == [0, 1, 0]


def test_urbansound8k_fold_folders(tmp_path):
    audio = tmp_path / "audio"
    head = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
    rows = [
        ["100-1-0-0.wav", 100, 0, 4, 1, 1, 1, "car_horn"],
        ["101-0-0-0.wav", 101, 0, 4, 1, 2, 0, "air_conditioner"],
        ["102-1-0-0.wav", 102, 0, 4, 1, 2, 1, "car_horn"],
        ["103-1-0-0.wav", 103, 0, "x", 1, "?", 1, "car_horn"],
    ]
    _wav(audio / "fold1" / rows[0][0])
    _wav(audio / "fold2" / rows[1][0])
    meta = _csv(tmp_path / "metadata" / "UrbanSound8K.csv", rows, head)
    s = read_urbansound8k(meta, audio)
    assert s.class_names == ["air_conditioner", "car_horn"]
    assert [(p.parent.name, c) for p, c in s.items] == [("fold1", 1), ("fold2", 0)]
    assert s.skipped == {"missing_audio": 1, "bad_row": 1}
    assert len(read_urbansound8k(meta, audio, folds=[1]).items) == 1


def test_vggsound_no_header_and_split(tmp_path):
    audio = tmp_path / "vgg"
    _wav(audio / "-abc_000030.wav")
    _wav(audio / "xyz_12.flac", "FLAC")
    _wav(audio / "tr_000000.wav")
    rows = [
        ["-abc", 30, "dog barking", "test"],
        ["xyz", 12, "bird chirping, tweeting", "test"],
        ["gone", 40, "dog barking", "test"],
        ["tr", 0, "car passing by", "train"],
    ]
    meta = _csv(tmp_path / "vggsound.csv", rows)
    s = read_vggsound(meta, audio, split="test")
    assert s.class_names == ["bird chirping, tweeting", "car passing by", "dog barking"]
    assert [(p.name, c) for p, c in s.items] == [("-abc_000030.wav", 2), ("xyz_12.flac", 0)]
    assert s.skipped == {"missing_audio": 1}
    assert len(read_vggsound(meta, audio).items) == 3


def test_generic_csv_and_dispatch(tmp_path):
    _wav(tmp_path / "clips" / "a.wav")
    _wav(tmp_path / "clips" / "b.wav")
    rows = [["clips/a.wav", "dog", "test"], ["clips/b.wav", "cat", "train"], ["clips/c.wav", "dog", "test"]]
    meta = _csv(tmp_path / "list.csv", rows, ["path", "label", "split"])
    s = read_labelled_csv(meta)
    assert s.class_names == ["cat", "dog"] and s.labels.tolist() == [1, 0]
    assert s.skipped == {"missing_audio": 1}
    s2 = load_clip_set("csv", meta, tmp_path, split="train", class_names=["dog", "cat", "bird"])
    assert [(p.name, c) for p, c in s2.items] == [("b.wav", 1)]
    s3 = read_labelled_csv(meta, class_names=["cat"])
    assert s3.skipped == {"unknown_class": 2}
    with pytest.raises(ValueError, match="no 'fold' column"):
        read_labelled_csv(meta, folds=1)
    with pytest.raises(ValueError, match="unknown clip-set format"):
        load_clip_set("nope", meta, tmp_path)


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_clotho(tmp_path / "none.csv", tmp_path)
    bad = _csv(tmp_path / "bad.csv", [["x"]], ["name"])
    with pytest.raises(ValueError, match="missing column"):
        read_esc50(bad, tmp_path)
