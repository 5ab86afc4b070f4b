"""Speed of eval.sed_metrics on synthetic data (issue #8): N ten-second clips with E events each.

    uv run python benchmarks/eval.py [--clips 10000] [--events 10] [--classes 10] [--no-tsv]

Synthetic clips: E events per clip with labels drawn from C classes (repeats of a class in a clip overlap
or not, as they fall), onsets uniform in [0, 9.5) s, lengths log-uniform in [0.2, 5] s; frame labels y by
``frame_activity`` on the 32-frame grid; scores = sigmoid(2 · (2y − 1) + b + e) with a per-(clip, class)
offset b ~ N(0, 0.7²) and noise e correlated over 7 frames (moving sum of N(0, 0.8²) / √7), then
median-filtered over 3 frames like the model's output. Metrics land in a plausible range (frame AUROC
~0.99 pooled, MPAUC ~0.84, PSDS1 ~0.25: many events are shorter than a frame, which DTC/GTC 0.7 punish).

Prints one JSON object with wall and CPU seconds: each metric on prepared in-memory data (PSDS1, MPAUC,
frame AUROC — which includes building the frame rows — and Spearman), one whole ``sed_metrics`` call on the
in-memory DataFrames, the open-vocabulary call (AUROC + Spearman only); PSDS1 and MPAUC straight from
``sed_scores_eval`` against ours on the first --compare-clips clips (same values, asserted); and (unless
--no-tsv) the TSV path: writing the score files, reading them back (``read_scores_dir``) and one
``sed_metrics`` call on the paths, as the CLI does (same values as in memory, asserted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# This file is named eval.py: run as a script, its folder comes first on sys.path and would shadow the
# `eval` package. Drop it before importing the package.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import numpy as np  # noqa: E402
import sed_scores_eval  # noqa: E402  (imported up front: its import, ~2-4 s with dcase_util, is not timed)

from eval.readers import Event, write_durations_tsv, write_ground_truth_tsv  # noqa: E402
from eval.scores import HOP_S, frame_scores_frame, read_scores_dir, write_scores_dir  # noqa: E402
from eval.sed_metrics import frame_auroc, frame_spearman, mpauc_score, prepare, psds1_score, sed_metrics  # noqa: E402
from model.inference import median_filter_frames  # noqa: E402
from model.text_slots import frame_activity  # noqa: E402


def synthetic(n_clips: int, n_events: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    classes = [f"sound event class {k}" for k in range(n_classes)]
    n = 32
    scores, gt, durs = {}, {}, {}
    for i in range(n_clips):
        clip = f"clip{i:06d}"
        labels = rng.integers(0, n_classes, n_events)
        onsets = rng.uniform(0.0, 9.5, n_events)
        offsets = np.minimum(onsets + np.exp(rng.uniform(np.log(0.2), np.log(5.0), n_events)), 10.0)
        events = [(float(a), float(b), classes[k]) for a, b, k in zip(onsets, offsets, labels, strict=True)]
        y = np.zeros((n_classes, n))
        for k in set(labels.tolist()):
            y[k] = frame_activity([(a, b) for a, b, c in events if c == classes[k]], 10.0, n)
        # per (clip, class) offset + noise correlated over ~7 frames (2 s), like a model's smooth output
        white = rng.normal(0.0, 0.8, (n_classes, n + 6))
        smooth = np.stack([np.convolve(w, np.ones(7) / np.sqrt(7), "valid") for w in white])
        logits = 2.0 * (2 * y - 1) + rng.normal(0.0, 0.7, (n_classes, 1)) + smooth
        p = median_filter_frames(1.0 / (1.0 + np.exp(-logits)), 3)
        scores[clip] = frame_scores_frame(p, classes, HOP_S, duration=10.0)
        gt[clip] = events
        durs[clip] = 10.0
    return scores, gt, durs


def timed(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process): on a shared machine the CPU time is the steadier."""
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - w, 3), round(time.process_time() - c, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=10000)
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--compare-clips", type=int, default=1000, help="clips for the sed_scores_eval baseline (0: skip)"
    )
    ap.add_argument("--no-tsv", action="store_true", help="skip the TSV write/read path")
    args = ap.parse_args()

    (scores, gt, durs), t_gen, _ = timed(synthetic, args.clips, args.events, args.classes, args.seed)
    res: dict = {
        "clips": args.clips,
        "events_per_clip": args.events,
        "classes": args.classes,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
        "generate_s": t_gen,
    }
    wall, cpu = {}, {}

    def step(name, fn, *a, **kw):
        out, wall[name], cpu[name] = timed(fn, *a, **kw)
        return out

    data = step("prepare", prepare, scores, gt, durs)
    psds1, _ = step("psds1", psds1_score, data)
    mpauc, _, _, _ = step("mpauc", mpauc_score, data)
    auroc, _, _ = step("auroc", frame_auroc, data)
    step("spearman", frame_spearman, data)
    wall["sum"], cpu["sum"] = round(sum(wall.values()), 3), round(sum(cpu.values()), 3)
    metrics = step("sed_metrics_total", sed_metrics, scores, gt, durs)
    step("open_vocab_total", sed_metrics, scores, gt, durs, open_vocab=True)
    res["in_memory_wall_s"], res["in_memory_cpu_s"] = wall, cpu
    res["metrics"] = {
        k: metrics[k]
        for k in ("psds1", "mpauc", "mpauc_mcclish", "auroc", "spearman", "n_frames", "n_events")
    }
    assert (metrics["psds1"], metrics["mpauc"], metrics["auroc"]) == (psds1, mpauc, auroc)

    if args.compare_clips:
        # the same metrics straight from sed_scores_eval on the first clips (same process, same load)
        from eval.sed_metrics import PSDS1

        keys = sorted(scores)[: args.compare_clips]
        sub = {k: scores[k] for k in keys}
        sub_d = {k: durs[k] for k in keys}
        sub_data = prepare(sub, {k: gt[k] for k in keys}, sub_d)
        sub_gt = {
            c.clip: [(a, b, lab) for lab, segs in c.events.items() for a, b in segs] for c in sub_data.clips
        }
        cmp: dict = {"clips": len(keys)}
        (ref_psds, *_), cmp["sed_scores_eval_psds1_wall_s"], cmp["sed_scores_eval_psds1_cpu_s"] = timed(
            sed_scores_eval.intersection_based.psds, sub, sub_gt, sub_d, **PSDS1
        )
        (ours, _), cmp["ours_psds1_wall_s"], cmp["ours_psds1_cpu_s"] = timed(psds1_score, sub_data)
        (ref_auc, _), cmp["sed_scores_eval_mpauc_wall_s"], cmp["sed_scores_eval_mpauc_cpu_s"] = timed(
            sed_scores_eval.segment_based.auroc, sub, sub_gt, sub_d, segment_length=1.0, max_fpr=0.1
        )
        (ours_auc, *_), cmp["ours_mpauc_wall_s"], cmp["ours_mpauc_cpu_s"] = timed(mpauc_score, sub_data)
        cmp["psds1_equal"] = bool(abs(ref_psds - ours) < 1e-12)
        cmp["mpauc_equal"] = bool(abs(ref_auc["mean"] - ours_auc) < 1e-12)
        res["vs_sed_scores_eval"] = cmp

    if not args.no_tsv:
        with tempfile.TemporaryDirectory(prefix="flam-eval-bench-") as tmp:
            tmp = Path(tmp)
            events = [Event(c, a, b, lab) for c, evs in gt.items() for a, b, lab in evs]
            tw, tc = {}, {}
            _, tw["write_scores_dir"], tc["write_scores_dir"] = timed(
                write_scores_dir, tmp / "scores", scores
            )
            write_ground_truth_tsv(events, tmp / "gt.tsv", clips=durs)
            write_durations_tsv(durs, tmp / "durations.tsv")
            _, tw["read_scores_dir"], tc["read_scores_dir"] = timed(read_scores_dir, tmp / "scores")
            m_path, tw["sed_metrics_total"], tc["sed_metrics_total"] = timed(
                sed_metrics, tmp / "scores", tmp / "gt.tsv", tmp / "durations.tsv"
            )
            assert m_path == metrics, "TSV path and in-memory results differ"
            res["tsv_path_wall_s"], res["tsv_path_cpu_s"] = tw, tc
    res["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
