"""Compare evaluated runs side by side: a Markdown table of their held-out metrics and joined detection plots.

    uv run python scripts/compare_runs.py --run FLAM=runs/x/flam/eval --run FLAM-Global=runs/x/global/eval \
        --dataset heldout_mixtures --out runs/x/compare

Reads each run's ``report.json`` and ``plots/`` (written by ``python -m eval.run_all``); writes
``OUT/comparison.md``, ``OUT/comparison.json`` and ``OUT/detection_<i>.png`` (the i-th detection plot of every run,
left to right — the runs evaluated the same clips in the same order, so the panels show the same audio).

Open-vocabulary SED datasets also get two audio-blind controls, computed on exactly the (clip, text, frame) rows
the runs were scored on (from the first run's ``scores/<dataset>`` files): a score that depends only on the
frame's position in the clip, and one that depends only on the text — each set to the held-out labels' own
active rate at that position / for that text, so they are upper bounds of what a model could get from the
position or the text alone. A frame-wise model must beat both to be locating sounds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from model.figures import save_figure  # noqa: E402

ROWS = (  # (label, path into the dataset's metrics, format: "pct" ×100 one decimal, "num" three decimals)
    ("frame AUROC (%)", ("auroc",), "pct"),
    ("Spearman ρ (alignment)", ("spearman",), "num"),
    ("best frame F1, approximate (%)", ("f1_curve", "approximate", "best_f1"), "pct"),
    ("  its threshold", ("f1_curve", "approximate", "best_threshold"), "num"),
    ("frame F1 at 0.5, approximate (%)", ("f1_curve", "approximate", "f1_at_0.5"), "pct"),
    ("best frame F1, unbiased (%)", ("f1_curve", "unbiased", "best_f1"), "pct"),
    ("frame F1 at 0.5, unbiased (%)", ("f1_curve", "unbiased", "f1_at_0.5"), "pct"),
)


def _metric(metrics: dict, path: tuple[str, ...]) -> float | None:
    value: object = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


_CONTROLS = {
    "position_only": "position only (held-out active rate per frame position), pooled",
    "position_only_within_pair": "position only, within pair",
    "text_only": "text only (held-out active rate per text), pooled",
    "frame_energy_within_pair": "mixture frame power (text-blind, sees the audio), within pair",
}


def _fmt(value: float | None, kind: str) -> str:
    if value is None or value != value:
        return "—"
    return f"{100 * value:.1f}" if kind == "pct" else f"{value:.3f}"


def _rows(scores_dir: Path):  # noqa: ANN202
    """(scores [R, n], labels bool [R, n], texts [R]) of an open-vocabulary scores folder, or None when clips differ
    in length (no common frame positions)."""
    from eval.sed_metrics import frame_rows, prepare  # the evaluator's own rows

    data = prepare(scores_dir, scores_dir / "ground_truth.tsv", scores_dir / "durations.tsv", open_vocab=True)
    groups = list(frame_rows(data).values())
    if len(groups) != 1:
        return None
    texts = [text for clip in data.clips for text in clip.events]  # frame_rows' row order
    clips = [clip.clip for clip in data.clips for _ in clip.events]
    return groups[0]["scores"], groups[0]["labels"], texts, clips


def within_pair_auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean over (clip, text) rows with both active and inactive frames of the row's own frame AUROC: how well a
    score ranks a text's frames inside one clip, free of any per-text offset (which the pooled AUROC rewards)."""
    from eval.sed_metrics import auroc

    values = [auroc(s, y) for s, y in zip(scores, labels, strict=True) if 0 < y.sum() < y.size]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def energy_control(rows, mixtures: str) -> float | None:  # noqa: ANN001 - `_rows`' tuple
    """Within-pair AUROC of a text-blind score that does see the audio: each frame's mean power in the mixture.
    A model that only finds "something sounds here" gets about this; beating it needs the text."""
    from collections import Counter

    from eval.datasets import shard_clips

    if rows is None:
        return None
    _, labels, _, clips = rows
    n = labels.shape[1]
    power = {}
    for clip in shard_clips(mixtures, "mixtures", Counter()):
        x = np.asarray(clip.wave, dtype=np.float64)
        edges = np.round(np.arange(n + 1) * x.size / n).astype(int)
        bounds = zip(edges[:-1], edges[1:], strict=True)
        power[clip.id] = np.array([np.mean(x[a:b] ** 2) if b > a else 0.0 for a, b in bounds])
    if missing := set(clips) - power.keys():
        raise ValueError(f"{len(missing)} scored clips are not in {mixtures} (e.g. {sorted(missing)[0]})")
    return within_pair_auroc(np.stack([power[c] for c in clips]), labels)


def audio_blind_controls(rows) -> dict[str, float | None]:  # noqa: ANN001 - `_rows`' tuple
    """AUROC of the position-only and text-only oracle scores on a scores folder's `_rows` (see module doc)."""
    from eval.sed_metrics import auroc

    if rows is None:
        return {}
    _, labels, texts, _ = rows
    y = labels.astype(np.float64)
    by_text: dict[str, list[int]] = {}
    for row, text in enumerate(texts):
        by_text.setdefault(text, []).append(row)
    text_rate = np.zeros(len(texts))
    for rows in by_text.values():
        text_rate[rows] = y[rows].mean()
    position = np.broadcast_to(y.mean(axis=0), y.shape)
    return {
        "position_only": auroc(position.ravel(), labels.ravel()),
        "position_only_within_pair": within_pair_auroc(position, labels),
        "text_only": auroc(np.broadcast_to(text_rate[:, None], y.shape).ravel(), labels.ravel()),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/compare_runs.py", description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, metavar="NAME=EVAL_DIR", help="an eval.run_all --out folder")
    p.add_argument("--dataset", default="heldout_mixtures", help="dataset name in the reports")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--mixtures", help="the runs' mixture shards (folder or pattern): adds the frame-energy control")
    p.add_argument("--plots", type=int, default=4, help="detection plots to join (at most what the runs wrote)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runs: list[tuple[str, Path, dict]] = []
    for item in args.run:
        name, sep, folder = item.partition("=")
        report = Path(folder) / "report.json"
        if not sep or not report.is_file():
            print(f"compare_runs: --run {item!r}: expected NAME=EVAL_DIR with EVAL_DIR/report.json", file=sys.stderr)
            return 2
        data = json.loads(report.read_text())
        if args.dataset not in data.get("datasets", {}):
            print(f"compare_runs: {report} has no dataset {args.dataset!r}", file=sys.stderr)
            return 2
        runs.append((name, Path(folder), data["datasets"][args.dataset]))
    args.out.mkdir(parents=True, exist_ok=True)

    table = {name: {label: _metric(d["metrics"], path) for label, path, _ in ROWS} for name, _, d in runs}
    lines = [f"| {args.dataset} ({runs[0][2].get('n_clips', '?')} clips) | " + " | ".join(n for n, _, _ in runs) + " |",
             "| --- |" + " --- |" * len(runs)]  # fmt: skip
    for label, _, kind in ROWS:
        lines.append(f"| {label} | " + " | ".join(_fmt(table[n][label], kind) for n, _, _ in runs) + " |")
    controls = {}
    scores_dir = runs[0][1] / "scores" / args.dataset
    if runs[0][2].get("kind") == "mixtures" and (scores_dir / "ground_truth.tsv").is_file():
        label = "within-pair frame AUROC (%)"
        rows = {name: _rows(folder / "scores" / args.dataset) for name, folder, _ in runs}
        for name, r in rows.items():
            table[name][label] = within_pair_auroc(r[0], r[1]) if r is not None else None
        lines.insert(3, f"| {label} | " + " | ".join(_fmt(table[n][label], "pct") for n, _, _ in runs) + " |")
        first = rows[runs[0][0]]  # the controls need no model: the first run's rows (read once)
        controls = audio_blind_controls(first)
        if args.mixtures:
            controls["frame_energy_within_pair"] = energy_control(first, args.mixtures)
        lines += ["", "| control (no model) | frame AUROC (%) |", "| --- | --- |"]
        lines += [f"| {_CONTROLS.get(name, name)} | {_fmt(value, 'pct')} |" for name, value in controls.items()]
    (args.out / "comparison.md").write_text("\n".join(lines) + "\n")
    summary = {"dataset": args.dataset, "metrics": table, "audio_blind_controls": controls}
    (args.out / "comparison.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("\n".join(lines))

    for i in range(args.plots):
        images = [folder / "plots" / f"detection_{args.dataset}_{i}.png" for _, folder, _ in runs]
        if not all(p.is_file() for p in images):
            break
        fig, axes = plt.subplots(1, len(images), figsize=(8 * len(images), 6), squeeze=False)
        for ax, (name, _, _), path in zip(axes[0], runs, images, strict=True):
            ax.imshow(plt.imread(path))
            ax.set_title(name, fontsize=16)
            ax.axis("off")
        save_figure(fig, args.out / f"detection_{i}.png", dpi=80)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
