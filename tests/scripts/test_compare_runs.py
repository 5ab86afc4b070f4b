"""scripts/compare_runs.py: the within-pair AUROC and the audio-blind controls on hand-built score folders."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "scripts" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)

HOP = 0.3125  # 32 frames per 10 s


def _write_run(folder: Path, frame_scores: dict[str, dict[str, np.ndarray]], events: dict[str, list]) -> Path:
    """An eval.run_all --out folder: scores/mixes/<clip>.tsv, ground_truth.tsv, durations.tsv, report.json."""
    scores = folder / "scores" / "mixes"
    scores.mkdir(parents=True)
    for clip, cols in frame_scores.items():
        names = list(cols)
        rows = ["\t".join(["onset", "offset", *names])]
        for i in range(32):
            rows.append("\t".join([f"{i * HOP}", f"{(i + 1) * HOP}", *(f"{cols[n][i]:.6f}" for n in names)]))
        (scores / f"{clip}.tsv").write_text("\n".join(rows) + "\n")
    gt = ["filename\tonset\toffset\tevent_label"]
    gt += [f"{clip}\t{on}\t{off}\t{label}" for clip, evs in events.items() for on, off, label in evs]
    (scores / "ground_truth.tsv").write_text("\n".join(gt) + "\n")
    (scores / "durations.tsv").write_text("filename\tduration\n" + "".join(f"{c}\t10.0\n" for c in frame_scores))
    report = {"datasets": {"mixes": {"kind": "mixtures", "n_clips": len(frame_scores), "metrics": {"auroc": 0.5}}}}
    (folder / "report.json").write_text(json.dumps(report))
    return scores


def _frames(on: float, off: float) -> np.ndarray:
    t = np.arange(32) * HOP
    return ((t + HOP > on) & (t < off)).astype(float)


EVENTS = {"a": [(0.0, 2.5, "dog"), (5.0, 7.5, "car")], "b": [(2.5, 5.0, "dog"), (0.0, 10.0, "rain")]}


def test_within_pair_auroc_by_hand() -> None:
    labels = np.array([[0, 0, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=bool)  # last row constant: left out
    scores = np.array([[0.1, 0.2, 0.9, 0.3], [0.5, 0.5, 0.1, 0.9], [0.0, 0.0, 0.0, 0.0]])
    # row 1: positives {0.9, 0.3} vs negatives {0.1, 0.2} -> 1.0; row 2: 0.5 vs {0.5, 0.1, 0.9} -> (0.5 + 1 + 0)/3
    assert compare_runs.within_pair_auroc(scores, labels) == pytest.approx((1.0 + 0.5) / 2)


def test_perfect_run_beats_controls_and_table(tmp_path: Path) -> None:
    perfect = {c: {lab: _frames(on, off) for on, off, lab in evs} for c, evs in EVENTS.items()}
    inverted = {c: {lab: 1.0 - v for lab, v in cols.items()} for c, cols in perfect.items()}
    scores = _write_run(tmp_path / "good", perfect, EVENTS)
    _write_run(tmp_path / "bad", inverted, EVENTS)

    controls = compare_runs.audio_blind_controls(compare_runs._rows(scores))
    # text only: "rain" is always on, every other text 25 % of its frames -> rain's frames rank first
    assert 0.5 < controls["text_only"] < 1.0
    assert 0.0 <= controls["position_only_within_pair"] <= 1.0

    out = tmp_path / "cmp"
    assert compare_runs.main(["--run", f"good={tmp_path / 'good'}", "--run", f"bad={tmp_path / 'bad'}",
                              "--dataset", "mixes", "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads((out / "comparison.json").read_text())
    within = "within-pair frame AUROC (%)"
    assert summary["metrics"]["good"][within] == pytest.approx(1.0)
    assert summary["metrics"]["bad"][within] == pytest.approx(0.0)
    assert "text only" in (out / "comparison.md").read_text()


def test_bad_run_argument_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare_runs.main(["--run", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "NAME=EVAL_DIR" in capsys.readouterr().err
