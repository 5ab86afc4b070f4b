"""Learning-rate schedule (App. C.5): cosine warm-up, then linear decay to 0 at the last scheduled step."""

from __future__ import annotations

import math


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimiser step `step` (0-based: the update that produces step + 1).

    Warm-up: base·½(1 − cos(π·(step+1)/warmup)) for the first `warmup_steps` updates (reaches base at the
    last one); then base·(total − step)/(total − warmup), falling linearly to base/(total − warmup) at the final update. The schedule
    depends only on the step, so a resumed run needs no scheduler state beyond the step.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return base_lr * 0.5 * (1.0 - math.cos(math.pi * (step + 1) / warmup_steps))
    remaining = max(total_steps - step, 0)
    return base_lr * remaining / max(total_steps - warmup_steps, 1)
