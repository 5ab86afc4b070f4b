"""pipelines/convert_sed_dataset.py: AudioSet-strong / DESED / URBAN-SED -> mixture shards, on real audio
(crops of corpus/demo recordings and synthetic tones written as WAV/FLAC in tmp_path)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from synth import shards
from synth.audio import load_audio
from synth.flac import decode_flac
from tests.pipeline_scripts import import_pipeline_script

conv = import_pipeline_script("convert_sed_dataset")

SR = 48000
RECORD_KEYS = {"key", "sample_rate", "duration", "events", "spec"}  # synth.records.mixture_record
EVENT_KEYS = {"text", "tags", "source_id", "source_ids", "segments"}


# ---------------------------------------------------------------- fixtures


def _demo(corpus: Path, rel: str, seconds: float) -> tuple[np.ndarray, int]:
    """The first ``seconds`` of a demo-corpus recording (mono float32) and its rate."""
    x, sr = sf.read(corpus / "audio" / rel, dtype="float32", always_2d=True)
    x = x.mean(axis=1)[: int(round(seconds * sr))]
    assert len(x) == int(round(seconds * sr)), f"{rel} is shorter than {seconds} s"
    return x, sr


def _tone(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write(path: Path, audio: np.ndarray, sr: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype="PCM_16")
    return path


def _read_split(out: Path) -> list[tuple[str, np.ndarray, dict]]:
    """Every sample of a split folder, read with the tarfile module: (key, audio, record)."""
    samples = []
    for tar_path in sorted(out.glob("shard-*.tar")):
        with tarfile.open(tar_path) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in sorted(files):
            if name.endswith(".json"):
                key = name[: -len(".json")]
                audio, sr = decode_flac(files[f"{key}.flac"])
                assert sr == SR
                samples.append((key, audio, json.loads(files[name])))
    return samples


def _check_records(samples) -> None:
    for i, (key, audio, rec) in enumerate(samples):
        assert key == shards.sample_key(i)
        assert set(rec) == RECORD_KEYS and rec["key"] == key
        assert rec["sample_rate"] == SR and rec["duration"] == 10.0 and len(audio) == 10 * SR
        for ev in rec["events"]:
            assert set(ev) == EVENT_KEYS and ev["tags"] == [ev["text"]]
            segs = ev["segments"]
            assert segs, ev
            for a, b in segs:
                assert 0.0 <= a < b <= 10.0
            for (_, b0), (a1, _) in zip(segs, segs[1:], strict=False):
                assert b0 < a1  # sorted, never overlapping or touching
        texts = [e["text"] for e in rec["events"]]
        assert len(texts) == len(set(texts))


def _digests(out: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.iterdir())
        if p.is_file() and not p.name.startswith(".")
    }


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = conv.main([*args, "--log-level", "WARNING"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _by_clip(samples) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for _, _, rec in samples:
        out.setdefault(rec["spec"]["clip_id"], []).append(rec)
    return out


def _events(rec) -> dict[str, list[list[float]]]:
    return {e["text"]: e["segments"] for e in rec["events"]}


@pytest.fixture
def desed(tmp_path, demo_corpus) -> tuple[Path, Path]:
    audio = tmp_path / "desed" / "audio"
    x, sr = _demo(demo_corpus, "holotz-castle-data/HCMainTitle_Fast.wav", 10.0)  # 22.05 kHz
    _write(audio / "Y-BJNMHMZDcU_50.000_60.000.wav", x, sr)
    _write(audio / "Yclip_b_0.000_10.000.wav", _tone(10.0, 16000), 16000)
    _write(audio / "weak_clip.wav", _tone(10.0, 16000), 16000)
    (audio / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really a wave file")
    tsv = tmp_path / "desed" / "validation.tsv"
    tsv.write_text(
        "filename\tonset\toffset\tevent_label\n"
        "Y-BJNMHMZDcU_50.000_60.000.wav\t1.0\t2.5\tAlarm_bell_ringing\n"
        "Y-BJNMHMZDcU_50.000_60.000.wav\t3.0\t5.0\tSpeech\n"
        "Y-BJNMHMZDcU_50.000_60.000.wav\t5.0\t6.0\tSpeech\n"  # touches the row above: merged
        "Y-BJNMHMZDcU_50.000_60.000.wav\t5.5\t7.25\tSpeech\n"  # overlaps: merged
        "Y-BJNMHMZDcU_50.000_60.000.wav\t8.0\t12.0\tVacuum_cleaner\n"  # ends after the clip: clipped
        "Yclip_b_0.000_10.000.wav\t\t\t\n"  # a clip with no events
        "weak_clip.wav\t\t\tDog\n"  # weak label: clip skipped
        "missing.wav\t0.5\t1.0\tCat\n"  # no audio
        "broken.wav\t0.5\t1.0\tCat\n"  # undecodable audio
        "Yclip_b_0.000_10.000.wav\tsoon\t2.0\tDishes\n",  # unparsable row
        encoding="utf-8",
    )
    return tsv, audio


# ---------------------------------------------------------------- the three formats


def test_desed_converts_with_counted_skips(desed, tmp_path, capsys):
    tsv, audio = desed
    out = tmp_path / "out"
    rc, stdout, _ = _run(
        capsys, "--format", "desed", "--labels", str(tsv), "--audio", str(audio), "--out", str(out)
    )
    assert rc == 0
    samples = _read_split(out)
    _check_records(samples)
    clips = _by_clip(samples)
    assert sorted(clips) == ["Y-BJNMHMZDcU_50.000_60.000", "Yclip_b_0.000_10.000"]
    (a,) = clips["Y-BJNMHMZDcU_50.000_60.000"]
    assert _events(a) == {
        "alarm bell ringing": [[1.0, 2.5]],
        "speech": [[3.0, 7.25]],
        "vacuum cleaner": [[8.0, 10.0]],
    }
    assert [e["text"] for e in a["events"]] == ["alarm bell ringing", "speech", "vacuum cleaner"]
    assert a["events"][0]["source_id"] == a["events"][0]["source_ids"][0] == "Y-BJNMHMZDcU_50.000_60.000"
    assert a["spec"]["converted_from"] == "desed" and a["spec"]["file"] == "Y-BJNMHMZDcU_50.000_60.000.wav"
    assert a["spec"]["crop_start_s"] == 0.0 and a["spec"]["notes"] == {}
    (b,) = clips["Yclip_b_0.000_10.000"]
    assert b["events"] == []

    for reason, n in {"weak_labels": 1, "no_audio": 1, "decode_error": 1, "bad_label_row": 1}.items():
        assert f"  {reason}: {n} " in stdout, (reason, stdout)
    assert "e.g. broken.wav" in stdout and "crops written:          2 of 2" in stdout
    assert len(stdout.splitlines()) < 40  # one screen


def test_audioset_strong_with_display_names(tmp_path, capsys, demo_corpus):
    audio = tmp_path / "as" / "audio"
    x, sr = _demo(demo_corpus, "gcompris-qt-data/chickens.ogg", 10.0)  # 44.1 kHz
    _write(audio / "eval" / "abcDEF12345_30000.flac", x, sr)
    _write(audio / "Yxyz_0.wav", _tone(10.0, 32000, 1000.0), 32000)
    names = tmp_path / "as" / "class_labels_indices.csv"
    names.write_text(
        'index,mid,display_name\n0,/m/09b5t,Chicken\n1,/m/05zppz,"Male speech, man speaking"\n'
        "2,/t/dd00001,Tone_Generator\n",
        encoding="utf-8",
    )
    tsv = tmp_path / "as" / "audioset_eval_strong.tsv"
    tsv.write_text(
        "segment_id\tstart_time_seconds\tend_time_seconds\tlabel\n"
        "YabcDEF12345_30000\t0.000\t1.500\t/m/09b5t\n"  # audio file has no leading Y
        "YabcDEF12345_30000\t1.500\t3.000\t/m/09b5t\n"  # touching: merged
        "YabcDEF12345_30000\t2.000\t9.000\t/m/05zppz\n"
        "YabcDEF12345_30000\t4.000\t5.000\t/m/0unknown\n"  # no display name
        "xyz_0\t0.25\t10.0\t/t/dd00001\n",  # audio file has a leading Y
        encoding="utf-8",
    )
    out = tmp_path / "out"
    rc, stdout, _ = _run(
        capsys,
        *("--format", "audioset-strong", "--labels", str(tsv), "--label-names", str(names)),
        *("--audio", str(audio), "--out", str(out)),
    )
    assert rc == 0, stdout
    samples = _read_split(out)
    _check_records(samples)
    clips = _by_clip(samples)
    (a,) = clips["YabcDEF12345_30000"]
    assert _events(a) == {"chicken": [[0.0, 3.0]], "male speech, man speaking": [[2.0, 9.0]]}
    assert a["spec"]["file"] == "eval/abcDEF12345_30000.flac" and a["spec"]["source_sample_rate"] == 44100
    (b,) = clips["xyz_0"]
    assert _events(b) == {"tone generator": [[0.25, 10.0]]}
    assert "  unknown_label: 1 label rows" in stdout and "/m/0unknown" in stdout

    # the same names as a tab-separated two-column file (mid_to_display_name.tsv) give the same shards
    names_tsv = tmp_path / "as" / "mid_to_display_name.tsv"
    names_tsv.write_text(
        "/m/09b5t\tChicken\n/m/05zppz\tMale speech, man speaking\n/t/dd00001\tTone_Generator\n",
        encoding="utf-8",
    )
    out2 = tmp_path / "out2"
    rc, _, _ = _run(
        capsys,
        *("--format", "audioset-strong", "--labels", str(tsv), "--label-names", str(names_tsv)),
        *("--audio", str(audio), "--out", str(out2)),
    )
    assert rc == 0
    assert {k: v for k, v in _digests(out2).items() if k.endswith(".tar")} == {
        k: v for k, v in _digests(out).items() if k.endswith(".tar")
    }


def test_urbansed_23s_file_gives_3_crops_with_clipped_shifted_segments(tmp_path, capsys, demo_corpus):
    root = tmp_path / "URBAN-SED"
    x, sr = _demo(demo_corpus, "supertuxkart-data/lenautile_restaurant.ogg", 23.0)  # 48 kHz
    src = _write(root / "audio" / "train" / "soundscape_train_bimodal0.wav", x, sr)
    _write(root / "audio" / "validate" / "soundscape_validate_unimodal1.wav", _tone(10.0, 44100), 44100)
    ann = root / "annotations"
    (ann / "train").mkdir(parents=True)
    (ann / "validate").mkdir(parents=True)
    (ann / "train" / "soundscape_train_bimodal0.txt").write_text(
        "0.5\t3.0\tdog_bark\n"
        "8.0\t12.0\tcar_horn\n"  # crosses 10 s: [8, 10] in crop 0, [0, 2] in crop 1
        "19.5\t21.0\tcar_horn\n"  # crosses 20 s: [9.5, 10] in crop 1, [0, 1] in crop 2
        "22.0\t30.0\tsiren\n"  # past the end of the audio (23 s): [2, 3] in crop 2
        "24.0\t25.0\tjackhammer\n"  # starts after the audio: dropped, counted
        "10.0\t10.0\tdog_bark\n",  # zero length: counted
        encoding="utf-8",
    )
    (ann / "validate" / "soundscape_validate_unimodal1.txt").write_text(
        "0.0\t10.0\tengine_idling\n", encoding="utf-8"
    )
    (ann / "validate" / "soundscape_validate_unimodal2.txt").write_text("1\t2\tsiren\n", encoding="utf-8")
    out = tmp_path / "out"
    rc, stdout, _ = _run(
        capsys,
        "--format",
        "urbansed",
        "--labels",
        str(ann),
        "--audio",
        str(root / "audio"),
        "--out",
        str(out),
    )
    assert rc == 0
    samples = _read_split(out)
    _check_records(samples)
    crops = _by_clip(samples)["soundscape_train_bimodal0"]
    assert [c["spec"]["crop_start_s"] for c in crops] == [0.0, 10.0, 20.0]
    assert [c["spec"]["crop_index"] for c in crops] == [0, 1, 2]
    assert {c["spec"]["num_crops"] for c in crops} == {3}
    assert _events(crops[0]) == {"dog bark": [[0.5, 3.0]], "car horn": [[8.0, 10.0]]}
    assert _events(crops[1]) == {"car horn": [[0.0, 2.0], [9.5, 10.0]]}
    assert _events(crops[2]) == {"car horn": [[0.0, 1.0]], "siren": [[2.0, 3.0]]}
    assert crops[2]["spec"]["valid_duration"] == 3.0 and crops[2]["spec"]["notes"] == {"zero_padded": 1}
    assert crops[0]["spec"]["notes"] == {} and crops[2]["duration"] == 10.0
    assert _events(_by_clip(samples)["soundscape_validate_unimodal1"][0]) == {"engine idling": [[0.0, 10.0]]}

    # the audio of each crop is the source's, shifted; the padded end of the last crop is silence
    ref = load_audio(src)
    audio = {
        rec["spec"]["crop_index"]: a
        for _, a, rec in samples
        if rec["spec"]["clip_id"] == crops[0]["spec"]["clip_id"]
    }
    for i in range(3):
        want = ref[i * 10 * SR : (i + 1) * 10 * SR]
        np.testing.assert_allclose(audio[i][: len(want)], want, atol=1.0 / 32768)
    assert not audio[2][3 * SR :].any()

    assert "  no_audio: 1 clips" in stdout and "  zero_length_event: 1 label rows" in stdout
    assert "  event_beyond_audio: 1 events" in stdout


# ---------------------------------------------------------------- bad input, resume, determinism


def test_missing_labels_path_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "audio").mkdir()
    rc, stdout, stderr = _run(
        capsys,
        *("--format", "desed", "--labels", str(tmp_path / "nope.tsv"), "--audio", str(tmp_path / "audio")),
        *("--out", str(tmp_path / "out")),
    )
    assert rc == 2 and stdout == ""
    assert stderr.strip().count("\n") == 0 and "--labels" in stderr and "nope.tsv" in stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "l.tsv").write_text("", encoding="utf-8")
    rc, _, stderr = _run(
        capsys,
        *("--format", "desed", "--labels", str(tmp_path / "l.tsv"), "--audio", str(tmp_path / "audio")),
        *("--out", str(tmp_path / "out"), "--label-names", str(tmp_path / "l.tsv")),
    )
    assert rc == 2 and "only used with --format audioset-strong" in stderr


def test_nothing_to_convert_exits_1(tmp_path, capsys):
    (tmp_path / "audio").mkdir()
    (tmp_path / "l.tsv").write_text(
        "filename\tonset\toffset\tevent_label\nx.wav\t0\t1\tDog\n", encoding="utf-8"
    )
    rc, stdout, stderr = _run(
        capsys,
        *("--format", "desed", "--labels", str(tmp_path / "l.tsv"), "--audio", str(tmp_path / "audio")),
        *("--out", str(tmp_path / "out")),
    )
    assert rc == 1 and "no_audio: 1" in stdout and "nothing to convert" in stderr


def test_rerun_is_byte_identical_and_resumes(desed, tmp_path, capsys):
    tsv, audio = desed
    args = ("--format", "desed", "--labels", str(tsv), "--audio", str(audio), "--shard-size", "1")
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    assert _run(capsys, *args, "--out", str(out_a))[0] == 0
    assert _run(capsys, *args, "--out", str(out_b), "--workers", "2")[0] == 0
    first = _digests(out_a)
    assert [n for n in first if n.endswith(".tar")] == ["shard-000000.tar", "shard-000001.tar"]
    assert first == _digests(out_b)  # tars, sidecars, config.json and index.json alike

    rc, stdout, _ = _run(capsys, *args, "--out", str(out_a))  # complete: nothing rewritten
    assert rc == 0 and "(0 shards written, 2 already complete)" in stdout
    assert _digests(out_a) == first

    (out_a / "shard-000001.tar").unlink()  # a lost shard is written again, same bytes
    rc, stdout, _ = _run(capsys, *args, "--out", str(out_a))
    assert rc == 0 and "(1 shards written, 1 already complete)" in stdout
    assert _digests(out_a) == first

    rc, _, stderr = _run(capsys, *args, "--out", str(out_a), "--clip-seconds", "5")  # other config: refused
    assert rc == 2 and "different configuration" in stderr


def test_output_reads_like_render_mixtures_output(desed, tmp_path, capsys):
    tsv, audio = desed
    out = tmp_path / "out"
    assert (
        _run(capsys, "--format", "desed", "--labels", str(tsv), "--audio", str(audio), "--out", str(out))[0]
        == 0
    )
    index = json.loads((out / shards.INDEX_NAME).read_text())
    config = json.loads((out / shards.CONFIG_NAME).read_text())
    assert index["version"] == shards.INDEX_VERSION and index["fingerprint"] == config["fingerprint"]
    assert index["num_samples"] == 2 and index["num_skipped"] == 0 and index["num_shards"] == 1
    assert index["totals"]["crops"] == 2 and index["input_skipped"]["no_audio"] == 1
    state = shards.scan_split_dir(str(out), config["fingerprint"], 1, config["config"]["shard_size"], 2)
    assert not state.todo and list(state.complete) == [0]
    # the render_mixtures reader: index.json lists the shards, WebDataset yields flac + json per key
    import webdataset as wds  # imports torch: only here

    urls = [str(out / s["name"]) for s in index["shards"]]
    got = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in got] == ["000000000", "000000001"]
    for s in got:
        rec = json.loads(s["json"])
        assert set(rec) == RECORD_KEYS
        x, sr = sf.read(io.BytesIO(s["flac"]), dtype="int16")
        assert sr == SR and x.shape == (10 * SR,)
        assert sf.info(io.BytesIO(s["flac"])).subtype == "PCM_16"


def test_audio_that_fails_full_decode_is_a_skipped_key(tmp_path, capsys, monkeypatch):
    audio = tmp_path / "audio"
    _write(audio / "a.wav", _tone(10.0, 16000), 16000)
    _write(audio / "b.wav", _tone(25.0, 16000), 16000)
    (tmp_path / "a.txt").parent.mkdir(exist_ok=True)
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "a.txt").write_text("1\t2\tdog\n", encoding="utf-8")
    (ann / "b.txt").write_text("1\t2\tdog\n", encoding="utf-8")
    real = conv.load_audio

    def flaky(path, target_sr):
        if Path(path).name == "b.wav":
            raise conv.AudioDecodeError(path, "truncated body", "decode_error")
        return real(path, target_sr=target_sr)

    monkeypatch.setattr(conv, "load_audio", flaky)
    out = tmp_path / "out"
    rc, stdout, _ = _run(
        capsys, "--format", "urbansed", "--labels", str(ann), "--audio", str(audio), "--out", str(out)
    )
    assert rc == 0 and "crops skipped (audio failed to decode): 3 (decode_error 3)" in stdout
    index = json.loads((out / "index.json").read_text())
    assert index["num_samples"] == 1 and index["num_skipped"] == 3
    assert index["shards"][0]["skipped_keys"] == ["000000001", "000000002", "000000003"]
    assert [k for k, _, _ in _read_split(out)] == ["000000000"]


# ---------------------------------------------------------------- helpers


def test_crop_starts():
    assert conv.crop_starts(23.0, 10.0, 1.0) == ([0.0, 10.0, 20.0], False)
    assert conv.crop_starts(10.0, 10.0, 1.0) == ([0.0], False)
    assert conv.crop_starts(4.0, 10.0, 1.0) == ([0.0], False)  # short file: one padded crop
    assert conv.crop_starts(10.02, 10.0, 1.0) == ([0.0], True)  # a 20-ms tail is not a crop
    assert conv.crop_starts(20.0000001, 10.0, 1.0) == ([0.0, 10.0], False)


def test_crop_events_merges_and_clips():
    events = [
        ("dog", 1.0, 2.0),
        ("dog", 2.0, 3.0),
        ("dog", 12.5, 13.3),
        ("cat", 9.0, 11.0),
        ("cat", 25.0, 26.0),
    ]
    assert conv.crop_events("c", events, 0.0, 10.0) == [
        {"text": "dog", "tags": ["dog"], "source_id": "c", "source_ids": ["c"], "segments": [[1.0, 3.0]]},
        {"text": "cat", "tags": ["cat"], "source_id": "c", "source_ids": ["c"], "segments": [[9.0, 10.0]]},
    ]
    second = conv.crop_events("c", events, 10.0, 20.0)
    assert [(e["text"], e["segments"]) for e in second] == [("cat", [[0.0, 1.0]]), ("dog", [[2.5, 3.3]])]


def test_label_text_and_names(tmp_path):
    assert conv.label_text("Alarm_bell_ringing") == "alarm bell ringing"
    assert conv.label_text("  Male speech, man  speaking ") == "male speech, man speaking"
    assert conv.strip_audio_ext("dir/Y-x_50.000_60.000.wav") == "Y-x_50.000_60.000"
    assert conv.strip_audio_ext("Y-x_50.000_60.000") == "Y-x_50.000_60.000"
    assert conv.find_audio("Yab_0", {"ab_0": "ab_0.wav"}) == "ab_0.wav"
    assert conv.find_audio("ab_0", {"Yab_0": "Yab_0.flac"}) == "Yab_0.flac"
    p = tmp_path / "names.csv"
    p.write_text("mid,display_name\n/m/09x0r,Speech\n/g/122z_qxw,Firecracker\n", encoding="utf-8")
    assert conv.read_label_names(p) == {"/m/09x0r": "Speech", "/g/122z_qxw": "Firecracker"}
    p.write_text("nothing here\n", encoding="utf-8")
    with pytest.raises(conv.InputError, match="no 'mid, display_name' rows"):
        conv.read_label_names(p)
