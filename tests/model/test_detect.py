"""python -m model.detect on real demo audio: odd formats, 47-s / 0.4-s / silent / corrupt / non-ASCII files,
outputs equal to the model's own frame_probabilities and detect, resume, name collisions, figures, exit codes."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from model.detect.__main__ import main
from model.detect.files import find_audio_files
from model.detect.outputs import TSV_HEADER
from model.detect.run import RESERVED, DetectOptions, Detector
from model.inference import segments_from_probabilities
from synth.audio import read_audio
from tests.model.detect_audio import (
    BURP,
    CHICKENS,
    ROOSTER,
    corrupt_files,
    odd_formats,
)

QUERIES = ["chickens clucking", "a rooster crowing"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    durations = odd_formats(d)
    bad = corrupt_files(d / "bad")
    return d, durations, [f"bad/{b}" for b in bad]


def _threshold(model):
    """A threshold that the untrained model's probabilities on real audio cross somewhere (not a vacuous check)."""
    x, sr = read_audio(CHICKENS)
    p = model.frame_probabilities(x.T, sr, QUERIES)
    return float(np.round(np.quantile(p, 0.6), 4))


def _rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


@pytest.fixture(scope="module")
def run1(inputs, ckpt, model, tmp_path_factory):
    folder, durations, bad = inputs
    out = tmp_path_factory.mktemp("out")
    thr = _threshold(model)
    args = [str(folder), "--checkpoint", str(ckpt), "--out", str(out), "--threshold", str(thr), "--no-plot",
            "--device", "cpu", "--quiet", "--batch-size", "3"]  # fmt: skip
    for q in QUERIES:
        args += ["--query", q]
    rc = main(args)
    return rc, out, thr, args


def test_every_odd_file_is_processed_and_corrupt_ones_are_counted_skips(inputs, run1):
    folder, durations, bad = inputs
    rc, out, _, _ = run1
    assert rc == 1  # finished, with skipped files
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(s["filename"] for s in summary["skipped"]) == sorted(bad)
    assert all(s["reason"] for s in summary["skipped"])
    assert summary["processed"] == len(durations) == summary["files"] - len(bad)
    assert summary["audio_hours"] == pytest.approx(sum(durations.values()) / 3600, rel=1e-2)
    for rel, dur in durations.items():
        stem = rel.rsplit(".", 1)[0]
        for suffix in (".tsv", ".json"):
            assert (out / f"{stem}{suffix}").is_file(), (rel, suffix)
        rec = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
        assert rec["filename"] == rel
        assert 0 <= rec["n_frames"] - rec["duration_s"] / 0.3125 < 1  # frame k ↔ [k, k+1)·0.3125 s
        assert rec["duration_s"] == pytest.approx(dur, abs=0.06)  # (an MP3 header only estimates it)
        assert set(rec["probabilities"]) == set(QUERIES)
    assert (out / "sous-dossier" / "rot_é_日本語.tsv").is_file()
    assert json.loads((out / "long_47s.json").read_text())["n_frames"] == 151  # 47 s → ceil(47 / 0.3125)
    assert json.loads((out / "short_0.4s.json").read_text())["n_frames"] == 2


def test_outputs_equal_the_models_own_probabilities_and_detect(inputs, run1, model):
    folder, durations, _ = inputs
    _, out, thr, _ = run1
    all_rows = _rows(out / "detections.tsv")
    assert all_rows[0] == TSV_HEADER.strip("\n").split("\t")
    n_segments = 0
    for rel in durations:
        stem = rel.rsplit(".", 1)[0]
        x, sr = read_audio(folder / rel)
        want = model.frame_probabilities(x.T, sr, QUERIES)
        rec = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
        got = np.array([rec["probabilities"][q] for q in QUERIES])
        np.testing.assert_allclose(got, want, atol=2e-6)
        segs = segments_from_probabilities(want, thr, 0.3125, x.shape[0] / sr)  # what FLAM.detect returns
        rows = _rows(out / f"{stem}.tsv")
        assert rows[0] == ["filename", "onset", "offset", "event_label", "score"]
        expect = sorted(
            (round(a, 4), round(b, 4), q) for q, ss in zip(QUERIES, segs, strict=True) for a, b in ss
        )
        assert sorted((float(r[1]), float(r[2]), r[3]) for r in rows[1:]) == expect
        for r in rows[1:]:
            assert r[0] == rel
            k = QUERIES.index(r[3])
            a, b = round(float(r[1]) / 0.3125), math.ceil(float(r[2]) / 0.3125 - 1e-6)
            assert float(r[4]) == pytest.approx(want[k, a:b].max(), abs=2e-6)  # score = run maximum
            assert float(r[4]) >= thr
        assert [r for r in all_rows[1:] if r[0] == rel] == rows[1:]
        n_segments += len(rows) - 1
    assert n_segments > 0  # the threshold was crossed: the comparison above is not vacuous
    assert sum(1 for r in all_rows[1:]) == n_segments


def _detect(model, ckpt, inputs, out, queries, **kw):
    """The run behind the CLI, with the module's loaded model (no checkpoint load per call)."""
    opts = DetectOptions(queries=tuple(queries), plot=False, **kw)
    return Detector(model, out, opts, str(ckpt), progress=False).run(
        find_audio_files(inputs, reserved=RESERVED)
    )


def test_silence_and_the_threshold_extremes(inputs, ckpt, model, tmp_path):
    folder, _, _ = inputs
    out = tmp_path / "o"
    s = _detect(model, ckpt, [folder / "silence.wav"], out, ["dog"], threshold=0.0)
    assert s.processed == 1 and not s.skipped
    rows = _rows(out / "silence.tsv")
    assert rows[1][1:4] == ["0.0000", "5.0000", "dog"]  # p ≥ 0 everywhere: one segment, cut at the file's end
    _detect(model, ckpt, [folder / "silence.wav"], out, ["dog"], threshold=1.0)
    assert _rows(out / "silence.tsv") == [["filename", "onset", "offset", "event_label", "score"]]


def test_resume_does_only_what_is_missing(run1):
    rc, out, _, args = run1
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name != "summary.json"}
    victim = out / "long_47s.json"
    victim.unlink()  # as if the run had been killed before this file finished
    assert main(args) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 1 and summary["already_done"] == len(before) - 1
    assert victim.is_file()
    for p, t in before.items():
        if p != victim:
            assert p.stat().st_mtime_ns == t  # untouched
    assert (
        len(_rows(out / "detections.tsv"))
        == len([r for p in out.rglob("*.tsv") if p.name != "detections.tsv" for r in _rows(p)[1:]]) + 1
    )


def test_changed_settings_are_not_taken_for_done(inputs, ckpt, model, tmp_path):
    folder, _, _ = inputs
    out = tmp_path / "o"
    assert _detect(model, ckpt, [folder / "short_0.4s.wav"], out, ["dog"]).processed == 1
    assert _detect(model, ckpt, [folder / "short_0.4s.wav"], out, ["dog"]).already_done == 1
    assert _detect(model, ckpt, [folder / "short_0.4s.wav"], out, ["cat"]).processed == 1
    assert "cat" in json.loads((out / "short_0.4s.json").read_text())["probabilities"]
    assert _detect(model, ckpt, [folder / "short_0.4s.wav"], out, ["cat"], threshold=0.2).processed == 1
    os.utime(folder / "short_0.4s.wav")  # the input changed
    assert _detect(model, ckpt, [folder / "short_0.4s.wav"], out, ["cat"], threshold=0.2).processed == 1


def test_same_names_in_different_places_do_not_overwrite(tmp_path, ckpt, model):
    src = tmp_path / "in"
    for p in ("a/x.wav", "b/x.wav", "c/y.wav"):
        (src / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BURP, (src / p).with_suffix(".flac"))
    shutil.copy(BURP, src / "c" / "y.wav.flac")  # no clash: stem "y.wav"
    shutil.copy(BURP, src / "c" / "y.ogg")  # clashes with c/y.flac
    shutil.copy(BURP, src / "detections.flac")  # would clash with the run's detections.tsv
    items = find_audio_files([src], reserved=("detections", "summary"))
    stems = sorted(i.out_stem.as_posix() for i in items)
    assert stems == ["a/x", "b/x", "c/y.flac", "c/y.ogg", "c/y.wav", "detections.flac"]
    out = tmp_path / "out"
    inputs = [src / "a", src / "b" / "x.flac", src / "c", src / "detections.flac"]
    assert not _detect(model, ckpt, inputs, out, ["burp"]).skipped
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tsv"))
    assert names == ["a/x.tsv", "b/x.tsv", "c/y.flac.tsv", "c/y.ogg.tsv", "c/y.wav.tsv",
                     "detections.flac.tsv", "detections.tsv"]  # fmt: skip
    assert _rows(out / "b" / "x.tsv")[0] == TSV_HEADER.strip("\n").split("\t")


def test_figures_are_drawn_for_each_file(tmp_path, ckpt):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(ROOSTER, src / "rooster.mp3")
    shutil.copy(BURP, src / "burp.flac")
    out = tmp_path / "out"
    rc = main([str(src), "--query", "a rooster", "--query", "a burp", "--checkpoint", str(ckpt), "--out", str(out),
               "--threshold", "0.3", "--quiet"])  # fmt: skip
    assert rc == 0
    import matplotlib.image as mpimg

    for name in ("rooster", "burp"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(png)
        assert img.shape[0] > 300 and img.shape[1] > 600  # spectrogram + one panel per query
        assert img[..., :3].std() > 0.05  # not a blank image
    assert not [p for p in out.rglob(".*")]  # no temp files left


@pytest.mark.parametrize("path", [ROOSTER, CHICKENS], ids=["2.35s", "12.35s-stitched"])
def test_figure_ends_at_the_audio_duration(path, model, tmp_path, monkeypatch):
    """The frame grid is padded to whole frames (2.35 s → 8 frames = 2.5 s; 12.35 s → 40 frames = 12.5 s), but no
    panel of the figure may run past the audio: x-limits, spectrogram, curves and shaded spans end at its end."""
    import soundfile as sf

    from model import figures
    from model.detect.outputs import render_png
    from model.inference import frame_hop_samples

    wave, sr = sf.read(str(path), always_2d=True)  # decoded length (an MP3 header's sf.info estimate is off)
    duration = wave.shape[0] / sr
    hop_s = frame_hop_samples(model.config) / model.config.frontend.sample_rate
    probs = model.frame_probabilities(wave.T, sr, QUERIES)
    assert probs.shape[1] * hop_s - duration > 0.1  # the grid itself does run past the end
    # p ≥ 0 and no duration: one span per query over the whole (padded) frame grid, past the end
    segs = segments_from_probabilities(probs, 0.0, hop_s)
    spans = [(a, b, q) for q, s in zip(QUERIES, segs, strict=True) for a, b in s]
    figs = []
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, p: (figs.append(fig), save(fig, p))[1])
    render_png(str(path), str(tmp_path / "f.png"), probs, QUERIES, spans, hop_s, 0.5, "t")
    assert (tmp_path / "f.png").is_file() and len(figs) == 1
    axes = figs[0].axes
    assert len(axes) == 1 + len(QUERIES)
    tol = 0.005  # half a spectrogram column (10 ms); a model frame is 0.3125 s
    for ax in axes:
        lo, hi = ax.get_xlim()
        assert lo == 0.0 and hi == pytest.approx(duration, abs=1e-6)
        last = [im.get_extent()[1] for im in ax.images]
        last += [p.get_patch_transform().transform(p.get_path().vertices)[:, 0].max() for p in ax.patches]
        assert last and max(last) <= duration + tol
    # the spectrogram shows all the samples, up to the end
    assert axes[0].images[0].get_extent()[1] == pytest.approx(duration, abs=tol)
    for ax in axes[1:]:
        steps = [p for p in ax.patches if type(p).__name__ == "StepPatch"]
        assert len(steps) == 1 and steps[0].get_data().edges[-1] == pytest.approx(duration, abs=1e-9)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--threshold", "1.5"], "--threshold"),
        (["--query", "Dog!", "--query", "dog"], "same text"),
        (["--query", "a\tb"], "tabs"),
        (["--query", "?!"], "empty"),
        (["--median-filter", "2"], "--median-filter"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(inputs, ckpt, capsys, extra, message):
    folder, _, _ = inputs
    args = [str(folder / "silence.wav"), "--checkpoint", str(ckpt), "--quiet"] + extra
    if "--query" not in extra:
        args += ["--query", "dog"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_missing_input_or_checkpoint_exit_2(tmp_path, ckpt, capsys):
    assert main([str(tmp_path / "nope.wav"), "--query", "dog", "--checkpoint", str(ckpt)]) == 2
    assert main([str(tmp_path), "--query", "dog", "--checkpoint", str(ckpt)]) == 2  # a folder without audio
    assert main([str(BURP), "--query", "dog", "--checkpoint", str(tmp_path / "no-ckpt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("error:") for e in err)
    assert "input not found" in err[0] and "no audio files" in err[1] and "no-ckpt" in err[2]


@pytest.mark.slow  # a fresh interpreter imports torch + transformers (~20-40 s on the 2-core VM)
def test_cli_process_exit_codes(tmp_path, ckpt):
    """A real process: missing input / checkpoint → exit 2, one line, no traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for args in (
        [str(tmp_path / "nope.wav"), "--query", "dog", "--checkpoint", str(ckpt)],
        [str(BURP), "--query", "dog", "--checkpoint", str(tmp_path / "no-ckpt")],
    ):
        r = subprocess.run([sys.executable, "-m", "model.detect", *args, "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("error:")
