"""report.json → report.md in the paper's table layout, and NaN-safe JSON.

``report`` layout::

    {"checkpoint": str, "method": str,
     "datasets": {NAME: {"task": "sed" | "retrieval" | "zeroshot", "n_clips": int, "seconds": float,
                         "metrics": {...}, "skipped": {reason: count}?}},
     "skipped_datasets": {NAME: reason}}

Tables (datasets in report order):

* SED (task "sed"): PSDS1 / mPAUC / AUROC / Spearman ρ; metric keys are looked up case-insensitively among
  ``SED_COLUMNS`` aliases (``psds1``, ``mpauc``, ``auroc``, ``spearman`` first).
* Retrieval (task "retrieval"): R@1 / R@5 for text→audio and audio→text (``r1_t2a``, ``r5_t2a``, ``r1_a2t``,
  ``r5_a2t`` of ``eval.metrics.retrieval.retrieval_metrics``).
* Zero-shot (task "zeroshot"): top-1 (and top-5 when any dataset has it).
* Calibration: every dataset whose metrics hold ``f1_curve`` — one ``eval.metrics.calibration.f1_curve`` dict
  (labelled with ``report["method"]``) or a mapping ``method -> f1_curve dict`` — best F1, its threshold, F1 at
  0.5.
* Skipped datasets with reasons, per-dataset skipped-row counts, run details (task, clips, seconds), and links
  to the plots (``plots/*.png`` beside report.md unless a list is given).

Number format: metrics are fractions in [0, 1] and are printed as percentages with one decimal (0.7345 →
``73.5``), as in the paper; exceptions: Spearman ρ (a correlation in [−1, 1]) and thresholds are printed as
plain numbers with 3 and 2 decimals. A missing, None, NaN or non-numeric value prints "—" (e.g. PSDS1 on the
open-vocabulary sets, where it is undefined).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DASH = "—"
SED_COLUMNS: list[tuple[str, tuple[str, ...], str]] = [
    ("PSDS1", ("psds1", "psds_1", "psds"), "pct"),
    ("mPAUC", ("mpauc", "m_pauc", "pauc"), "pct"),
    ("AUROC", ("auroc", "mauroc", "m_auroc", "auc"), "pct"),
    ("Spearman ρ", ("spearman", "spearman_rho", "rho"), "corr"),
]
RETRIEVAL_COLUMNS = [
    ("T→A R@1", ("r1_t2a",), "pct"),
    ("T→A R@5", ("r5_t2a",), "pct"),
    ("A→T R@1", ("r1_a2t",), "pct"),
    ("A→T R@5", ("r5_a2t",), "pct"),
]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    return None


def fmt(value: Any, kind: str = "pct") -> str:
    """ "pct": fraction → percent with 1 decimal; "corr": 3 decimals; "thr": 2 decimals; "int": integer."""
    v = _number(value)
    if v is None:
        return DASH
    if kind == "pct":
        return f"{100.0 * v:.1f}"
    if kind == "corr":
        return f"{v:.3f}"
    if kind == "thr":
        return f"{v:.2f}"
    if kind == "int":
        return str(int(round(v)))
    raise ValueError(f"unknown number kind {kind!r}")


def _lookup(metrics: Mapping, keys: Sequence[str]) -> Any:
    lower = {str(k).lower(): v for k, v in metrics.items()}
    for key in keys:
        if key in lower and _number(lower[key]) is not None:
            return lower[key]
    return None


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], n_text_columns: int = 1) -> list[str]:
    """Markdown table; the first ``n_text_columns`` columns are left-aligned, the numbers right-aligned."""
    align = [":---"] * n_text_columns + ["---:"] * (len(header) - n_text_columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _curves(metrics: Mapping, default_method: str) -> dict[str, Mapping]:
    curve = metrics.get("f1_curve")
    if not isinstance(curve, Mapping):
        return {}
    if "best_f1" in curve or "f1" in curve:
        return {default_method: curve}
    return {str(m): c for m, c in curve.items() if isinstance(c, Mapping)}


def report_markdown(report: Mapping, plots: Sequence[str] | None = None) -> str:
    """The Markdown text of ``write_report_md`` (``plots``: link targets, relative to report.md)."""
    datasets: Mapping = report.get("datasets") or {}
    method = str(report.get("method") or "method")
    by_task: dict[str, list[tuple[str, Mapping]]] = {}
    for name, entry in datasets.items():
        by_task.setdefault(str(entry.get("task", "")), []).append((str(name), entry))

    out = ["# FLAM evaluation report", ""]
    out += [f"- Checkpoint: `{report.get('checkpoint', DASH)}`", f"- Method: `{method}`", ""]
    out += [
        "Scores are percentages with one decimal (fraction × 100), as in the paper; Spearman ρ is a correlation "
        f"(3 decimals) and thresholds are plain numbers. {DASH} = undefined or not computed.",
        "",
    ]

    def metric_rows(entries: list[tuple[str, Mapping]], columns: list, extra: list) -> list[list[str]]:  # noqa: ANN001
        rows = []
        for name, entry in entries:
            m = entry.get("metrics") or {}
            rows.append([name, fmt(entry.get("n_clips"), "int")] + [f(entry, m) for f in extra]
                        + [fmt(_lookup(m, keys), kind) for _, keys, kind in columns])  # fmt: skip
        return rows

    if by_task.get("sed"):
        out += ["## Sound event detection", ""]
        header = ["Dataset", "Clips"] + [c[0] for c in SED_COLUMNS]
        out += _table(header, metric_rows(by_task["sed"], SED_COLUMNS, []))
    if by_task.get("retrieval"):
        out += ["## Text–audio retrieval", ""]
        header = ["Dataset", "Clips", "Captions"] + [c[0] for c in RETRIEVAL_COLUMNS]
        captions = [lambda e, m: fmt(m.get("n_texts"), "int")]
        out += _table(header, metric_rows(by_task["retrieval"], RETRIEVAL_COLUMNS, captions))
    if by_task.get("zeroshot"):
        out += ["## Zero-shot classification", ""]
        columns = [("Top-1", ("top1",), "pct")]
        if any(_lookup(e.get("metrics") or {}, ("top5",)) is not None for _, e in by_task["zeroshot"]):
            columns.append(("Top-5", ("top5",), "pct"))
        classes = [lambda e, m: fmt(m.get("n_classes"), "int")]
        header = ["Dataset", "Clips", "Classes"] + [c[0] for c in columns]
        out += _table(header, metric_rows(by_task["zeroshot"], columns, classes))

    cal_rows = []
    for name, entry in datasets.items():
        for meth, curve in _curves(entry.get("metrics") or {}, method).items():
            cal_rows.append([str(name), meth, fmt(curve.get("best_f1")), fmt(curve.get("best_threshold"), "thr"),
                             fmt(curve.get("f1_at_0.5"))])  # fmt: skip
    if cal_rows:
        out += ["## Calibration (frame-wise F1 against threshold)", ""]
        out += _table(["Dataset", "Method", "Best F1", "Best threshold", "F1 @ 0.5"], cal_rows, 2)

    other = [(n, e) for task, items in by_task.items() if task not in ("sed", "retrieval", "zeroshot") for n, e in items]  # fmt: skip
    if other:
        out += ["## Other results", ""]
        for name, entry in other:
            out.append(f"- {name} (task {entry.get('task')!r}): not tabulated")
        out.append("")

    skipped_sets: Mapping = report.get("skipped_datasets") or {}
    if skipped_sets:
        out += ["## Skipped datasets", ""]
        out += [f"- **{name}**: {reason}" for name, reason in skipped_sets.items()] + [""]

    if datasets:
        out += ["## Run details", ""]
        rows = []
        for name, entry in datasets.items():
            skipped = entry.get("skipped") or {}
            if isinstance(skipped, Mapping):
                skipped_text = ", ".join(f"{k}: {v}" for k, v in skipped.items()) or "none"
            else:
                skipped_text = str(skipped)
            seconds = _number(entry.get("seconds"))
            rows.append([str(name), str(entry.get("task", DASH)), skipped_text, fmt(entry.get("n_clips"), "int"),
                         DASH if seconds is None else f"{seconds:.1f}"])  # fmt: skip
        out += _table(["Dataset", "Task", "Skipped rows", "Clips", "Seconds"], rows, 3)

    if plots:
        out += ["## Plots", ""]
        out += [f"- [{Path(p).name}]({Path(p).as_posix()})" for p in plots] + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def write_report_md(report: Mapping, path: str | Path, plots: Sequence[str | Path] | None = None) -> Path:
    """Write the Markdown report; ``plots`` default: ``plots/*.png`` beside ``path`` (linked relatively)."""
    out = Path(path)
    if plots is None:
        plots = sorted((out.parent / "plots").glob("*.png"))
    links = [os.path.relpath(Path(p), out.parent) if Path(p).is_absolute() or Path(p).exists() else str(p)
             for p in plots]  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report_markdown(report, links), encoding="utf-8")
    return out


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: NaN/±inf → None, numpy scalars/arrays → Python, Path → str, keys → str."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def report_json_dumps(report: Any, indent: int | None = 2) -> str:
    """JSON text of ``report`` with NaN / infinity written as null (strict JSON)."""
    return json.dumps(to_jsonable(report), indent=indent, ensure_ascii=False, allow_nan=False)


def write_report_json(report: Any, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report_json_dumps(report) + "\n", encoding="utf-8")
    return out
