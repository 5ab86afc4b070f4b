"""Evaluation figures (matplotlib, Agg backend — no display needed).

* ``plot_calibration``: frame-wise F1, precision and recall against threshold, one colour and line style per
  method (paper Fig. 3), from ``eval.metrics.calibration.f1_curve`` dicts; the best-F1 point is marked.
* ``plot_detection``, ``log_mel_spectrogram``: defined in ``model.figures`` (``model.detect`` draws the same
  figure) and re-exported here: spectrogram + per-text probability curves + shaded events (paper Fig. 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model.figures import log_mel_spectrogram, plot_detection, save_figure  # noqa: E402

__all__ = ["log_mel_spectrogram", "plot_calibration", "plot_detection"]

_STYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]


def plot_calibration(curves: Mapping[str, Mapping], path: str | Path, title: str | None = None) -> Path:
    """F1 / precision / recall against threshold, one line style per method (Fig. 3). Returns ``path``."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (method, curve) in enumerate(curves.items()):
        th = np.asarray(curve["threshold"], dtype=np.float64)
        style = {"color": colors[i % len(colors)], "ls": _STYLES[i % len(_STYLES)], "lw": 1.6}
        for ax, key in zip(axes, ("f1", "precision", "recall"), strict=True):
            ax.plot(th, np.asarray(curve[key], dtype=np.float64), label=str(method), **style)
        best_t, best_f1 = curve.get("best_threshold"), curve.get("best_f1")
        if best_t is not None and best_f1 is not None and np.isfinite(best_t) and np.isfinite(best_f1):
            axes[0].plot([best_t], [best_f1], "o", color=style["color"], ms=5)
    for ax, name in zip(axes, ("F1", "precision", "recall"), strict=True):
        ax.set_title(name)
        ax.set_xlabel("threshold")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("frame-wise score")
    if curves:
        axes[0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
