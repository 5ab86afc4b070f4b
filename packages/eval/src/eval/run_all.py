"""`python -m eval.run_all --checkpoint DIR [--config configs/eval/NAME.yaml] [--mixtures DIR …] [--audio-text DIR …]
--out DIR [--method approximate|unbiased] [--device …] [--batch-size …]`: the paper's tables for one checkpoint.

Writes `OUT/report.json`, `OUT/report.md`, `OUT/plots/*.png` and, per SED dataset, `OUT/scores/NAME/` (one
sed_scores_eval TSV per clip + `ground_truth.tsv` + `durations.tsv`), so anyone can recompute the numbers with
sed_scores_eval or `python -m eval.sed_metrics`. Exit status: 0 done, 2 bad arguments or checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from eval import datasets as ds
from eval.metrics import class_prompts, f1_curve, frame_labels, retrieval_metrics, zeroshot_metrics
from eval.model_outputs import METHODS, load_model, probabilities, text_heads
from eval.plots import plot_calibration, plot_detection
from eval.report import write_report_json, write_report_md

log = logging.getLogger("eval.run_all")
HOP_S = 0.3125


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m eval.run_all", description="Evaluate a FLAM checkpoint (paper Tables 1–3, Fig. 2–3)."
    )
    p.add_argument(
        "--checkpoint", required=True, help="FLAM checkpoint folder, or an OpenFLAM .pth with --text-encoder"
    )
    p.add_argument("--text-encoder", default=None, help="local text encoder folder (for an OpenFLAM .pth)")
    p.add_argument("--config", default=None, help="eval config (configs/eval/*.yaml) naming the datasets")
    p.add_argument("--mixtures", nargs="+", action="extend", default=[], metavar="DIR",
                   help="held-out mixture shard folders (open-vocabulary SED)")  # fmt: skip
    p.add_argument("--audio-text", nargs="+", action="extend", default=[], metavar="DIR",
                   help="held-out audio-text shard folders (retrieval)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", choices=METHODS, default="approximate", help="Eq. 8 form for the SED tables")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=16, help="10-s windows per forward")
    p.add_argument("--max-clips", type=int, default=0, help="at most this many clips per dataset (0 = all)")
    p.add_argument("--plots", type=int, default=None, help="detection plots per SED dataset (default 4)")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


class Evaluator:
    def __init__(self, model: Any, out: Path, method: str, max_clips: int, n_plots: int, median_filter: int,
                 chunk: int = 64) -> None:  # fmt: skip
        self.model, self.out, self.method = model, out, method
        self.max_clips, self.n_plots, self.median_filter, self.chunk = (
            max_clips,
            n_plots,
            median_filter,
            chunk,
        )
        self.plots = out / "plots"

    # ------------------------------------------------------------------ clips
    def clips(self, spec: ds.DatasetSpec, skipped: Counter) -> tuple[list[ds.Clip], list[str]]:
        """The dataset's readable clips, and its class names (zero-shot sets; empty otherwise)."""
        o = spec.options
        if spec.kind in ("mixtures", "audio-text"):
            return list(ds.shard_clips(str(o["path"]), spec.kind, skipped, self.max_clips)), []
        if spec.kind in ds.SED_KINDS:
            from eval.sed_sets import sed_file_clips

            return sed_file_clips(spec, skipped, self.max_clips), []
        from eval.clip_sets import load_clip_set

        filters = {k: o[k] for k in ("folds", "split") if k in o}
        kind = "csv" if spec.kind == "csv" else spec.kind
        cs = load_clip_set(kind, o["csv"], o.get("audio"), **filters)
        skipped.update(cs.skipped)
        out = []
        for i, item in enumerate(cs.items):
            if self.max_clips and len(out) >= self.max_clips:
                break
            path = item[0]
            try:
                wave, sr = ds.load_file(path)
            except Exception as e:  # noqa: BLE001 - undecodable file: counted skip
                skipped["decode_error"] += 1
                log.warning("%s: skipped %s (%s)", spec.name, path, e)
                continue
            if spec.task == "retrieval":
                out.append(
                    ds.Clip(f"{i:06d}-{Path(path).stem}", wave, sr, len(wave) / sr, captions=list(item[1]))
                )
            else:
                out.append(
                    ds.Clip(f"{i:06d}-{Path(path).stem}", wave, sr, len(wave) / sr, label=int(item[1]))
                )
        return out, list(cs.class_names) if spec.task == "zeroshot" else []

    # ------------------------------------------------------------------ model passes
    def frame_embeddings(self, clips: list[ds.Clip], name: str) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for i in tqdm(range(0, len(clips), self.chunk), desc=f"{name}: frames", unit="batch", leave=False):
            part = clips[i : i + self.chunk]
            out.extend(
                self.model.frame_embeddings_batch([c.wave for c in part], [c.sample_rate for c in part])
            )
        return out

    def clip_embeddings(self, clips: list[ds.Clip], name: str) -> np.ndarray:
        out = []
        for i in tqdm(range(0, len(clips), self.chunk), desc=f"{name}: clips", unit="batch", leave=False):
            part = clips[i : i + self.chunk]
            out.append(self.model.embed_audio_batch([c.wave for c in part], [c.sample_rate for c in part]))
        return np.concatenate(out) if out else np.zeros((0, self.model.config.joint_dim), np.float32)

    # ------------------------------------------------------------------ tasks
    def sed(self, spec: ds.DatasetSpec, clips: list[ds.Clip]) -> dict[str, Any]:
        from eval.readers import Event, write_durations_tsv, write_ground_truth_tsv
        from eval.scores import frame_scores_frame, write_scores_dir
        from eval.sed_metrics import sed_metrics

        open_vocab = spec.kind == "mixtures"
        frames = self.frame_embeddings(clips, spec.name)
        if open_vocab:
            vocab = sorted({lab for c in clips for _, _, lab in c.events})
        else:
            vocab = sorted(
                {lab for c in clips for _, _, lab in c.events} | set(spec.options.get("classes", []))
            )
        if not vocab:
            raise ValueError(f"dataset {spec.name} has no labelled event")
        emb, alpha, beta = text_heads(self.model, vocab)
        index = {t: k for k, t in enumerate(vocab)}
        scores, gt, durations = {}, {}, {}
        probs_by_method: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
        labels: list[np.ndarray] = []
        for c, f in zip(clips, frames, strict=True):
            texts = sorted({lab for _, _, lab in c.events}) if open_vocab else vocab
            if not texts:
                continue  # open vocabulary: a clip without events has no text to score
            rows = [index[t] for t in texts]
            for m in METHODS:
                probs_by_method[m].append(
                    probabilities(f, emb[rows], alpha[rows], beta[rows], m, self.median_filter)
                )
            labels.append(frame_labels(texts, c.events, f.shape[0], HOP_S))
            p = probs_by_method[self.method][-1]
            scores[c.id] = frame_scores_frame(p, texts, hop_s=HOP_S, duration=c.duration)
            gt[c.id] = list(c.events)
            durations[c.id] = c.duration
        metrics = sed_metrics(scores, gt, durations, open_vocab=open_vocab, hop_s=HOP_S)
        metrics["f1_curve"] = {m: f1_curve(probs_by_method[m], labels) for m in METHODS}
        folder = self.out / "scores" / spec.name
        write_scores_dir(folder, scores)
        write_ground_truth_tsv(
            [Event(cid, on, off, lab) for cid, evs in gt.items() for on, off, lab in evs],
            folder / "ground_truth.tsv",
            clips=list(gt),
        )
        write_durations_tsv(durations, folder / "durations.tsv")
        plot_calibration(metrics["f1_curve"], self.plots / f"calibration_{spec.name}.png", title=spec.name)
        shown = 0
        for c in clips:
            if shown >= self.n_plots or c.id not in scores:
                continue
            texts = list(scores[c.id].columns[2:])
            probs = scores[c.id][texts].to_numpy().T
            plot_detection(c.wave, c.sample_rate, probs, texts, c.events,
                           self.plots / f"detection_{spec.name}_{shown}.png", title=f"{spec.name}: {c.id}")  # fmt: skip
            shown += 1
        return metrics

    def retrieval(self, spec: ds.DatasetSpec, clips: list[ds.Clip]) -> dict[str, Any]:
        audio = self.clip_embeddings(clips, spec.name)
        texts = [t for c in clips for t in c.captions]
        owner = np.array([i for i, c in enumerate(clips) for _ in c.captions], dtype=np.int64)
        emb, _, _ = text_heads(self.model, texts)
        return retrieval_metrics(audio, emb, owner)

    def zeroshot(self, spec: ds.DatasetSpec, clips: list[ds.Clip], names: list[str]) -> dict[str, Any]:
        prompts = class_prompts(names, spec.options.get("template", "{}"))
        emb, _, _ = text_heads(self.model, prompts)
        audio = self.clip_embeddings(clips, spec.name)
        return zeroshot_metrics(audio, emb, np.array([c.label for c in clips]), class_names=names)

    def run(self, spec: ds.DatasetSpec) -> dict[str, Any]:
        t0 = time.perf_counter()
        skipped: Counter = Counter()
        clips, class_names = self.clips(spec, skipped)
        if not clips:
            raise ValueError(f"no readable clip (skipped: {dict(skipped)})")
        if spec.task == "sed":
            metrics = self.sed(spec, clips)
        elif spec.task == "retrieval":
            metrics = self.retrieval(spec, clips)
        else:
            metrics = self.zeroshot(spec, clips, class_names)
        return {
            "task": spec.task,
            "kind": spec.kind,
            "n_clips": len(clips),
            "seconds": round(time.perf_counter() - t0, 3),
            "audio_seconds": round(sum(c.duration for c in clips), 3),
            "skipped": dict(skipped),
            "metrics": metrics,
        }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        specs, settings = ds.parse_config(args.config)
        for i, d in enumerate(args.mixtures):
            specs.append(ds.DatasetSpec(f"mixtures_{Path(d).name or i}", "mixtures", {"path": d}))
        for i, d in enumerate(args.audio_text):
            specs.append(ds.DatasetSpec(f"audio_text_{Path(d).name or i}", "audio-text", {"path": d}))
        if not specs:
            raise ValueError("no dataset: give --config, --mixtures or --audio-text")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must be unique, got {names}")
        model = load_model(args.checkpoint, args.text_encoder, args.device, args.batch_size)
    except (ValueError, FileNotFoundError) as e:
        print(f"eval.run_all: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_plots = args.plots if args.plots is not None else int(settings.get("detection_plots", 4))
    ev = Evaluator(model, out, args.method, args.max_clips or int(settings.get("max_clips", 0)), n_plots,
                   int(settings.get("median_filter", 3)))  # fmt: skip
    report: dict[str, Any] = {"checkpoint": str(args.checkpoint), "method": args.method, "datasets": {},
                              "skipped_datasets": {}}  # fmt: skip
    for spec in specs:
        why = spec.missing()
        if why:
            print(f"eval.run_all: skipping {spec.name} ({spec.kind}): {why}", file=sys.stderr)
            report["skipped_datasets"][spec.name] = why
            continue
        log.info("evaluating %s (%s, %s)", spec.name, spec.kind, spec.task)
        try:
            report["datasets"][spec.name] = ev.run(spec)
        except Exception as e:  # noqa: BLE001 - one broken dataset must not lose the others' results
            log.exception("dataset %s failed", spec.name)
            report["skipped_datasets"][spec.name] = f"failed: {type(e).__name__}: {e}"
    write_report_json(report, out / "report.json")
    write_report_md(report, out / "report.md")
    done, skipped = len(report["datasets"]), len(report["skipped_datasets"])
    print(f"eval.run_all: {done} dataset(s) evaluated, {skipped} skipped; report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
