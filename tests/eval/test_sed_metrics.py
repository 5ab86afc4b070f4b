"""eval.scores and eval.sed_metrics: exact agreement with sklearn / scipy / sed_scores_eval, the
open-vocabulary rule, Spearman, the score-file and CLI round trips."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import sed_scores_eval
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from eval.readers import Event, merge_segments, write_durations_tsv, write_ground_truth_tsv
from eval.scores import frame_scores_frame, read_scores_dir, write_scores_dir
from eval.sed_metrics import main, prepare, rowwise_spearman, sed_metrics
from model.text_slots import frame_activity

HOP = 0.3125
CLASSES = ["dog barking", "speech", "car horn", "rain"]


def synthetic(n_clips=60, seed=0, grid_aligned=False, noise=None, ties=False, durations=None):
    """Scores (DataFrames), ground truth and durations of random clips; with ``noise`` None the scores are
    the frame labels themselves (perfect), else labels + noise."""
    rng = np.random.default_rng(seed)
    scores, gt, durs = {}, {}, {}
    for i in range(n_clips):
        clip = f"clip{i:03d}"
        d = 10.0 if durations is None else float(durations[i % len(durations)])
        n = int(np.ceil(round(d / HOP, 6)))
        events = []
        for _ in range(3):
            label = CLASSES[rng.integers(len(CLASSES))]
            if grid_aligned:
                a = int(rng.integers(0, n - 1))
                b = int(rng.integers(a + 4, a + 12))
                on, off = a * HOP, min(b * HOP, n * HOP)
            else:
                on = float(rng.uniform(0, d - 0.5))
                off = on + float(rng.uniform(0.2, 4.0))
            events.append((on, off, label))
        y = np.zeros((len(CLASSES), n))
        for k, c in enumerate(CLASSES):
            segs = merge_segments([(max(a, 0), min(b, d)) for a, b, lab in events if lab == c])
            y[k] = frame_activity(segs, n * HOP, n)
        p = y if noise is None else np.clip(0.5 * y + rng.normal(0.25, noise, y.shape), 0, 1)
        if ties:
            p = np.round(p, 1)
        scores[clip] = frame_scores_frame(p, CLASSES, duration=d)
        gt[clip] = events
        durs[clip] = d
    return scores, gt, durs


def merged_gt(gt, durs):
    out = {}
    for clip, events in gt.items():
        by = {}
        for a, b, lab in events:
            by.setdefault(lab, []).append((max(a, 0.0), min(b, durs[clip])))
        out[clip] = [(a, b, lab) for lab, segs in by.items() for a, b in merge_segments(segs)]
    return out


def reference_frames(scores, gt, durs, pairs):
    """Scores and labels of the frames of the (clip, text) pairs, built the slow way."""
    s, y = [], []
    for clip, text in pairs:
        d, df = durs[clip], scores[clip]
        n = int(np.ceil(round(d / HOP, 6)))
        segs = [(max(a, 0), min(b, d)) for a, b, lab in gt[clip] if lab == text]
        y.append(frame_activity(segs, n * HOP, n))
        s.append(df[text].to_numpy()[:n])
    return np.concatenate(s), np.concatenate(y)


# ---------------------------------------------------------------- scores


def test_frame_scores_frame_grid_and_duration():
    p = np.arange(2 * 33, dtype=np.float32).reshape(2, 33) / 100
    df = frame_scores_frame(p, ["Dog barks!", "rain"], duration=9.9)
    assert list(df.columns) == ["onset", "offset", "dog barks", "rain"]
    assert len(df) == 32  # the 33rd frame starts at 10.0 >= 9.9: padding, dropped
    np.testing.assert_array_equal(df["onset"].to_numpy(), np.arange(32) * HOP)
    assert df["offset"].iloc[-1] == 9.9 and df["offset"].iloc[0] == HOP
    np.testing.assert_array_equal(df["rain"].to_numpy(), p[1, :32].astype(np.float64))
    with pytest.raises(ValueError, match="repeat"):
        frame_scores_frame(p, ["Rain", "rain."])
    with pytest.raises(ValueError, match="rows"):
        frame_scores_frame(p, ["a"])


def test_scores_dir_round_trip_is_exact(tmp_path):
    scores, _, _ = synthetic(5, noise=0.3)
    write_scores_dir(tmp_path / "s", scores)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [f"{c}.tsv" for c in sorted(scores)]
    back = read_scores_dir(tmp_path / "s")
    for clip, df in scores.items():
        pd.testing.assert_frame_equal(back[clip], df, check_exact=True)
    # sed_scores_eval reads them too
    assert sed_scores_eval.io.read_sed_scores(tmp_path / "s" / "clip000.tsv").shape == df.shape
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.tsv").write_text("onset\toffset\ta\n0\t1\tzzz\n")
    with pytest.raises(ValueError, match="not a number"):
        read_scores_dir(tmp_path / "bad")


# ---------------------------------------------------------------- metrics


def test_perfect_scores_give_one():
    scores, gt, durs = synthetic(40, grid_aligned=True)
    m = sed_metrics(scores, gt, durs)
    assert m["psds1"] == pytest.approx(1.0)
    assert m["auroc"] == 1.0 and m["mpauc"] == 1.0 and m["mpauc_mcclish"] == 1.0
    assert m["spearman"] == pytest.approx(1.0)
    assert m["n_clips"] == 40 and m["n_classes"] == 4
    assert set(m["per_class"]["psds1"]) == set(CLASSES)


def test_shuffled_scores_give_chance():
    scores, gt, durs = synthetic(200, seed=1, noise=0.1)
    rng = np.random.default_rng(7)
    keys = list(scores)
    shuffled = {k: scores[keys[j]] for k, j in zip(keys, rng.permutation(len(keys)), strict=True)}
    m = sed_metrics(shuffled, gt, durs, psds=False)
    assert "psds1" not in m
    assert abs(m["auroc"] - 0.5) < 0.03
    assert abs(m["spearman"]) < 0.05


def test_frame_auroc_and_mpauc_match_sklearn_and_sed_scores_eval():
    # variable durations (a last frame cut short, non-integer seconds), tied scores
    scores, gt, durs = synthetic(80, seed=2, noise=0.3, ties=True, durations=[10.0, 7.3, 4.05, 12.5])
    m = sed_metrics(scores, gt, durs, psds=False)
    pairs = [(c, t) for c in sorted(scores) for t in CLASSES]
    s, y = reference_frames(scores, gt, durs, pairs)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["n_frames"] == s.size
    for t in CLASSES:
        st, yt = reference_frames(scores, gt, durs, [(c, t) for c in sorted(scores)])
        assert m["per_class"]["auroc"][t] == pytest.approx(roc_auc_score(yt, st), abs=1e-12)

    ref, _ = sed_scores_eval.segment_based.auroc(
        scores, merged_gt(gt, durs), durs, segment_length=1.0, max_fpr=0.1
    )
    assert m["mpauc"] == pytest.approx(ref["mean"], abs=1e-12)
    for t in CLASSES:
        assert m["per_class"]["mpauc"][t] == pytest.approx(ref[t], abs=1e-12)

    # McClish-corrected pAUC = sklearn's roc_auc_score(max_fpr=0.1) on the same 1-s segments
    data = prepare(scores, gt, durs)
    from eval.sed_metrics import segment_rows

    seg_s, seg_y = segment_rows(data)
    mcc = [roc_auc_score(seg_y[:, k], seg_s[:, k], max_fpr=0.1) for k in range(len(CLASSES))]
    assert m["mpauc_mcclish"] == pytest.approx(np.mean(mcc), abs=1e-12)


def test_scores_off_the_frame_grid_take_the_largest_overlapping_frame():
    """0.1-s score frames: frame AUROC per class = sed_scores_eval's segment-based AUROC on 0.3125-s segments."""
    rng = np.random.default_rng(3)
    scores, gt, durs = {}, {}, {}
    for i in range(30):
        clip = f"c{i}"
        p = rng.random((len(CLASSES), 100))
        t = np.arange(101) * 0.1
        scores[clip] = pd.DataFrame(np.c_[t[:-1], t[1:], p.T], columns=["onset", "offset", *CLASSES])
        gt[clip] = [(on, on + rng.uniform(0.5, 3), CLASSES[rng.integers(4)]) for on in rng.uniform(0, 8, 2)]
        durs[clip] = 10.0
    m = sed_metrics(scores, gt, durs, psds=False)
    ref, _ = sed_scores_eval.segment_based.auroc(scores, merged_gt(gt, durs), durs, segment_length=HOP)
    for t in CLASSES:
        assert m["per_class"]["auroc"][t] == pytest.approx(ref[t], abs=1e-12)


def test_psds1_matches_sed_scores_eval_and_merges_overlapping_events():
    scores, gt, durs = synthetic(50, seed=4, noise=0.25)
    gt["clip000"] = gt["clip000"] + [
        (1.0, 3.0, "rain"),
        (2.0, 4.0, "rain"),
        (4.0, 5.0, "rain"),
    ]  # overlap/touch
    m = sed_metrics(scores, gt, durs)
    ref = sed_scores_eval.intersection_based.psds(
        scores,
        merged_gt(gt, durs),
        durs,
        dtc_threshold=0.7,
        gtc_threshold=0.7,
        alpha_ct=0,
        alpha_st=1,
        max_efpr=100,
    )
    assert m["psds1"] == pytest.approx(ref[0], abs=1e-12)
    assert 0.0 < m["psds1"] < 1.0


def test_open_vocab_counts_only_each_clips_own_texts():
    t = np.arange(5) * 2.0
    frame = lambda p: pd.DataFrame(np.c_[t[:-1], t[1:], np.array(p).T], columns=["onset", "offset", "a", "b"])  # noqa: E731
    # 2-s frames: clip 1 has event "a" in frame 0, clip 2 event "b" in frame 3
    scores = {
        "c1": frame([[0.9, 0.2, 0.1, 0.3], [0.95, 0.95, 0.95, 0.95]]),  # "b" is not an event of c1
        "c2": frame([[0.99, 0.99, 0.99, 0.99], [0.1, 0.2, 0.3, 0.8]]),  # "a" is not an event of c2
    }
    gt = {"c1": [(0.0, 2.0, "a")], "c2": [(6.0, 8.0, "b")]}
    durs = {"c1": 8.0, "c2": 8.0}
    closed = sed_metrics(scores, gt, durs, hop_s=2.0, psds=False)
    open_ = sed_metrics(scores, gt, durs, hop_s=2.0, open_vocab=True)
    # open vocabulary: only (c1, a) and (c2, b): positives 0.9, 0.8; negatives 0.2 0.1 0.3 0.1 0.2 0.3
    assert open_["auroc"] == 1.0
    assert (
        open_["n_frames"] == 8 and "psds1" not in open_ and "mpauc" not in open_ and "per_class" not in open_
    )
    # closed set: every (clip, class) pair; the absent classes' high scores are false positives
    s = np.r_[0.9, 0.2, 0.1, 0.3, 0.95, 0.95, 0.95, 0.95, 0.99, 0.99, 0.99, 0.99, 0.1, 0.2, 0.3, 0.8]
    y = np.r_[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert closed["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert closed["auroc"] < 0.5 < open_["auroc"]


def test_open_vocab_per_clip_texts_and_missing_text():
    t = np.arange(33) * HOP
    rng = np.random.default_rng(5)

    def frame(texts):
        return pd.DataFrame(
            np.c_[t[:-1], t[1:], rng.random((32, len(texts)))], columns=["onset", "offset", *texts]
        )

    scores = {"x": frame(["a dog barks", "rain on a roof"]), "y": frame(["a cat meows"])}
    gt = {"x": [(1.0, 2.0, "A dog barks.")], "y": [(0.0, 5.0, "a cat meows")]}
    m = sed_metrics(scores, gt, {"x": 10.0, "y": 10.0}, open_vocab=True)
    s, y = reference_frames(
        scores,
        {"x": [(1.0, 2.0, "a dog barks")], "y": gt["y"]},
        {"x": 10.0, "y": 10.0},
        [("x", "a dog barks"), ("y", "a cat meows")],
    )
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(ValueError, match="columns differ"):
        sed_metrics(scores, gt, {"x": 10.0, "y": 10.0})  # closed set needs one class list
    with pytest.raises(ValueError, match="not among"):
        sed_metrics(scores, {"y": [(0, 1, "a horse")]}, {"x": 10.0, "y": 10.0}, open_vocab=True)


def test_spearman_hand_case():
    scores = np.array([[0.1, 0.4, 0.35, 0.8, 0.8, 0.2], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])
    labels = np.array([[0, 1, 0, 1, 1, 0], [0, 1, 1, 0, 0, 0]], dtype=bool)
    rho = rowwise_spearman(scores, labels)
    assert rho[0] == pytest.approx(spearmanr(scores[0], labels[0]).statistic, abs=1e-12)
    # by hand: ranks of the scores 1, 4, 3, 5.5, 5.5, 2; of the labels 2, 5, 2, 5, 5, 2 -> rho = 0.8783...
    rs, ry = np.array([1, 4, 3, 5.5, 5.5, 2]), np.array([2, 5, 2, 5, 5, 2.0])
    rs, ry = rs - rs.mean(), ry - ry.mean()
    assert rho[0] == pytest.approx((rs @ ry) / np.sqrt((rs @ rs) * (ry @ ry)), abs=1e-12)
    assert rho[1] == 0.0  # constant scores: defined as 0 (scipy gives NaN)

    # through sed_metrics: a clip-long event (constant labels) is left out and counted
    t = np.arange(7) * 1.0
    df = pd.DataFrame(np.c_[t[:-1], t[1:], scores.T], columns=["onset", "offset", "a", "b"])
    m = sed_metrics(
        {"c": df}, {"c": [(1, 2, "a"), (3, 5, "a"), (0, 6, "b")]}, {"c": 6.0}, hop_s=1.0, psds=False
    )
    assert m["spearman"] == pytest.approx(rho[0], abs=1e-12)
    assert m["spearman_counts"] == {"events": 1, "constant_labels": 1, "constant_scores": 0}


def test_input_errors():
    scores, gt, durs = synthetic(3)
    with pytest.raises(ValueError, match="no scores"):
        sed_metrics({"clip000": scores["clip000"]}, gt, durs)
    with pytest.raises(ValueError, match="no duration"):
        sed_metrics(scores, {**gt, "other": []}, durs)
    with pytest.raises(ValueError, match="not among"):
        sed_metrics(scores, {"clip000": [(0, 1, "thunder")]}, durs)
    with pytest.raises(FileNotFoundError):
        sed_metrics("/nonexistent/scores", gt, durs)


def test_ground_truth_as_events_and_clips_without_events():
    scores, gt, durs = synthetic(20, seed=6, noise=0.3)
    events = [Event(c, a, b, lab) for c, evs in gt.items() for a, b, lab in evs]
    assert sed_metrics(scores, events, durs) == sed_metrics(scores, gt, durs)
    gt_some = {c: evs for c, evs in gt.items() if c != "clip003"}  # clip003: no events, still evaluated
    m = sed_metrics(scores, gt_some, durs)
    assert m["n_clips"] == 20 and m["n_events"] < sed_metrics(scores, gt, durs)["n_events"]


# ---------------------------------------------------------------- CLI


def write_inputs(tmp_path, scores, gt, durs):
    write_scores_dir(tmp_path / "scores", scores)
    events = [Event(c, a, b, lab) for c, evs in gt.items() for a, b, lab in evs]
    write_ground_truth_tsv(events, tmp_path / "gt.tsv", clips=durs)
    write_durations_tsv(durs, tmp_path / "durations.tsv")
    return ["--scores", str(tmp_path / "scores"), "--ground-truth", str(tmp_path / "gt.tsv"),
            "--durations", str(tmp_path / "durations.tsv")]  # fmt: skip


@pytest.mark.parametrize("open_vocab", [False, True])
def test_cli_round_trip_equals_in_memory(tmp_path, capsys, open_vocab):
    scores, gt, durs = synthetic(30, seed=8, noise=0.3, durations=[10.0, 6.5])
    args = write_inputs(tmp_path, scores, gt, durs) + ["--out", str(tmp_path / "m.json")]
    assert main(args + (["--open-vocab"] if open_vocab else [])) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = json.loads(json.dumps(sed_metrics(scores, gt, durs, open_vocab=open_vocab)))
    assert printed == expected
    assert json.loads((tmp_path / "m.json").read_text()) == expected


def test_cli_bad_input_exit_2(tmp_path, capsys):
    scores, gt, durs = synthetic(3)
    args = write_inputs(tmp_path, scores, gt, durs)
    (tmp_path / "durations.tsv").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "durations.tsv" in err


@pytest.mark.slow  # a fresh interpreter imports torch (5-25 s here); main() above covers the exit code in-process
def test_cli_module_missing_file(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "eval.sed_metrics", "--scores", str(tmp_path / "none"),
         "--ground-truth", str(tmp_path / "gt.tsv"), "--durations", str(tmp_path / "d.tsv")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ") and r.stdout == ""
