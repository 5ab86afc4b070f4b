"""eval.plots and eval.report: PNGs are written with sane sizes; report.md tables, dashes and NaN-safe JSON."""

from __future__ import annotations

import json
import math

import matplotlib.image as mpimg
import numpy as np
import pytest

from eval.metrics.calibration import f1_curve
from eval.plots import log_mel_spectrogram, plot_calibration, plot_detection
from eval.report import report_json_dumps, write_report_json, write_report_md


def _png_ok(path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 5000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return img.shape[:2]


@pytest.mark.parametrize(("seconds", "n_texts"), [(10.0, 3), (2.3, 1), (65.0, 10), (0.0, 2)])
def test_plot_detection_any_length(tmp_path, seconds, n_texts):
    sr = 16000
    rng = np.random.default_rng(0)
    wave = 0.1 * rng.normal(size=int(seconds * sr)).astype(np.float32)
    n_frames = max(1, math.ceil(seconds / 0.3125))
    probs = rng.random((n_texts, n_frames))
    texts = [f"sound {i}" for i in range(n_texts)]
    gt = [(0.5, 1.5, "Sound 0"), (2.0, 4.0, "unlisted")]
    out = plot_detection(wave, sr, probs, texts, gt, tmp_path / "plots" / "det.png", title="clip")
    h, _ = _png_ok(out)
    if n_texts == 10:
        assert h > 700  # the figure grows with the number of texts


def test_plot_detection_stereo_and_shape_check(tmp_path):
    wave = np.zeros((48000, 2))
    wave[:, 0] = np.sin(np.arange(48000) * 0.1)
    _png_ok(plot_detection(wave, 48000, np.full((1, 4), 0.5), ["a"], [], tmp_path / "s.png"))
    with pytest.raises(ValueError, match="probs"):
        plot_detection(wave, 48000, np.zeros((2, 4)), ["a"], [], tmp_path / "x.png")


def test_log_mel_columns_bounded():
    spec, hop = log_mel_spectrogram(np.zeros(16000 * 600), 16000)
    assert spec.shape[0] == 64 and spec.shape[1] <= 4000 and hop > 0.1


def _curve(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.random((4, 500)) < 0.3
    return f1_curve([np.clip(0.4 * y + 0.6 * rng.random((4, 500)), 0, 1)], [y])


def test_plot_calibration(tmp_path):
    out = plot_calibration({"flam": _curve(0), "global": _curve(1), "third": _curve(2)}, tmp_path / "cal.png")
    _png_ok(out)


def _report() -> dict:
    return {
        "checkpoint": "ckpt/flam.pt",
        "method": "approximate",
        "datasets": {
            "desed": {
                "task": "sed",
                "n_clips": 692,
                "seconds": 12.5,
                "metrics": {
                    "psds1": 0.4012,
                    "mpauc": 0.8111,
                    "auroc": 0.9123,
                    "spearman": 0.61234,
                    "f1_curve": _curve(0),
                },  # fmt: skip
                "skipped": {"missing_audio": 3},
            },
            "asfx-sed": {
                "task": "sed",
                "n_clips": 100,
                "seconds": 3.0,
                "metrics": {"psds1": float("nan"), "mpauc": 0.7, "auroc": np.float32(0.8)},
            },
            "clotho": {
                "task": "retrieval",
                "n_clips": 1045,
                "seconds": 40.0,
                "metrics": {"r1_t2a": 0.1534, "r5_t2a": 0.4, "r1_a2t": 0.2, "r5_a2t": 0.5, "n_texts": 5225},
            },
            "esc50": {
                "task": "zeroshot",
                "n_clips": 2000,
                "seconds": 20.0,
                "metrics": {"top1": 0.8634, "top5": 0.97, "n_classes": 50},
            },
        },
        "skipped_datasets": {"audiocaps": "csv not found: /data/audiocaps/test.csv"},
    }


def test_report_md(tmp_path):
    plot_calibration({"approximate": _curve(0)}, tmp_path / "plots" / "calibration.png")
    out = write_report_md(_report(), tmp_path / "report.md")
    text = out.read_text(encoding="utf-8")
    assert "| Dataset | Clips | PSDS1 | mPAUC | AUROC | Spearman ρ |" in text
    assert "| desed | 692 | 40.1 | 81.1 | 91.2 | 0.612 |" in text
    assert "| asfx-sed | 100 | — | 70.0 | 80.0 | — |" in text
    assert "| Dataset | Clips | Captions | T→A R@1 | T→A R@5 | A→T R@1 | A→T R@5 |" in text
    assert "| clotho | 1045 | 5225 | 15.3 | 40.0 | 20.0 | 50.0 |" in text
    assert "| Dataset | Clips | Classes | Top-1 | Top-5 |" in text
    assert "| esc50 | 2000 | 50 | 86.3 | 97.0 |" in text
    assert "| Dataset | Method | Best F1 | Best threshold | F1 @ 0.5 |" in text
    assert "| desed | approximate |" in text
    assert "**audiocaps**: csv not found" in text
    assert "missing_audio: 3" in text
    assert "[calibration.png](plots/calibration.png)" in text


def test_report_json_nan_is_null(tmp_path):
    rep = _report()
    text = report_json_dumps(rep)
    assert "NaN" not in text
    data = json.loads(text)
    assert data["datasets"]["asfx-sed"]["metrics"]["psds1"] is None
    assert data["datasets"]["asfx-sed"]["metrics"]["auroc"] == pytest.approx(0.8)
    path = write_report_json({"x": [np.inf, np.int64(3), tmp_path]}, tmp_path / "r.json")
    assert json.loads(path.read_text()) == {"x": [None, 3, str(tmp_path)]}
