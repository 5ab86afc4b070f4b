"""Training logs on rank 0: `OUT/metrics.jsonl` (one JSON object per logged step), TensorBoard in `OUT/tb/`,
and a console bar (step, loss terms, samples/s, ETA).

On resume, lines of `metrics.jsonl` past the resumed step are dropped first, so the file holds each step
once even after a kill between a log line and the next checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"
# the keys every logged line carries (issue contract); more may follow
REQUIRED_KEYS = (
    "step", "lr", "loss", "l_clip", "l_sed", "l_prior", "samples_per_s", "data_wait_s", "skipped_samples",
    "dropped_texts",
)  # fmt: skip


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the lines with step <= last_step (and drop a torn last line)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= last_step:
            keep.append(line)
    path.write_text("".join(k + "\n" for k in keep))


class TrainLog:
    """Rank-0 sinks; on other ranks every method is a no-op."""

    def __init__(self, out: Path, enabled: bool, start_step: int, last_step: int, tensorboard: bool,
                 progress: bool) -> None:  # fmt: skip
        self.enabled = enabled
        self.bar = None
        self.tb = None
        self.metrics = None
        if not enabled:
            return
        path = out / METRICS_NAME
        truncate_metrics(path, start_step)
        self.metrics = path.open("a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step + 1)
            except ImportError as e:  # pragma: no cover - tensorboard is a declared dependency
                log.warning("TensorBoard logging off: %s", e)
        if progress:
            self.bar = tqdm(
                total=last_step, initial=start_step, unit="step", dynamic_ncols=True, smoothing=0.1
            )

    def step(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    def write(self, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {
            k: (v if not (isinstance(v, float) and not math.isfinite(v)) else str(v)) for k, v in rec.items()
        }
        self.metrics.write(json.dumps(clean) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, int | float) and math.isfinite(v):
                    self.tb.add_scalar(f"train/{k}", v, rec["step"])
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"loss {rec['loss']:.4g} clip {rec['l_clip']:.3g} sed {rec['l_sed']:.3g} prior {rec['l_prior']:.3g} "
                f"{rec['samples_per_s']:.1f} clips/s",
                refresh=False,
            )

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            log.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.metrics is not None:
            self.metrics.close()
