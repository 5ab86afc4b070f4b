"""Trainer checkpoints: `OUT/checkpoints/step-NNNNNNNN/` written atomically, the last K kept.

A checkpoint folder holds the model (`model.safetensors` + `config.json` + `text_encoder/`, loadable with
`FLAM.from_pretrained`), `optimizer.pt` (rank 0's optimiser state; identical on every rank under DDP),
`rng-rank{R}.pt` (Python, NumPy, torch CPU and CUDA generator states of every rank) and `state.json`
(step, seed, world size, loader workers, batch sizes, data interval, resolved config). It is assembled in a
temporary folder beside the final one and renamed into place by rank 0 after every rank has written its
part, so a kill at any moment leaves the previous checkpoints intact. The learning-rate schedule is a pure
function of the step (`model.train.schedule`), so the step is all the scheduler state there is; the data
position is the step too (`model.train.data`).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import _write_checkpoint
from model.flam import FLAM

CHECKPOINTS = "checkpoints"
STATE_NAME = "state.json"
_STEP_RE = re.compile(r"^step-(\d{8})$")
# what must match between the saved run and a resumed one for the data stream to continue exactly
RESUME_KEYS = ("seed", "world_size", "num_workers", "global_batch", "sed_batch", "interval_steps")


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / CHECKPOINTS / f"step-{step:08d}"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (state.json present) in step order."""
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and (p / STATE_NAME).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out: Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def staging_dir(out: Path, step: int, token: str) -> Path:
    """The temporary folder every rank writes into for the checkpoint of `step` (token shared by all ranks)."""
    return out / CHECKPOINTS / f".step-{step:08d}.tmp-{token}"


def new_token() -> str:
    return uuid.uuid4().hex[:12]


def write_model_part(model: FLAM, optimizer: torch.optim.Optimizer, tmp: Path) -> None:
    """Rank 0: model files and optimiser state into the staging folder."""
    tmp.mkdir(parents=True, exist_ok=True)
    _write_checkpoint(model, tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")


def write_rank_part(tmp: Path, rank: int) -> None:
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")


def publish(out: Path, tmp: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Rank 0, after every rank wrote its part: state.json last, rename into place, prune to `keep`."""
    (tmp / STATE_NAME).write_text(json.dumps(state, indent=2))
    final = checkpoint_dir(out, step)
    if final.exists():  # a checkpoint of the same step (e.g. a re-run after a kill): replace it whole
        old = final.with_name(final.name + f".old-{new_token()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    for _, p in list_checkpoints(out)[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    for p in (out / CHECKPOINTS).glob(".step-*"):  # staging folders of killed saves
        if p != tmp:
            shutil.rmtree(p, ignore_errors=True)
    return final


def read_state(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / STATE_NAME).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{ckpt / STATE_NAME}: cannot read the trainer state ({e})") from None


def check_resume(saved: dict[str, Any], current: dict[str, Any], ckpt: Path) -> None:
    """Refuse to resume when the data stream could not continue exactly (ValueError naming the keys)."""
    refuse_resume(ckpt, [
        f"{k}: checkpoint {saved.get(k)!r}, now {current[k]!r}"
        for k in RESUME_KEYS
        if saved.get(k) != current[k]
    ])  # fmt: skip


def refuse_resume(ckpt: Path, diffs: list[str]) -> None:
    """ValueError naming each difference that forbids resuming from `ckpt` (none: nothing)."""
    if diffs:
        raise ValueError(
            f"cannot resume from {ckpt}: the run differs in " + "; ".join(diffs)
            + ". Resume with the same settings, or start a new run with --init pointing at that checkpoint."
        )  # fmt: skip


def load_optimizer(optimizer: torch.optim.Optimizer, ckpt: Path, device: torch.device) -> None:
    state = torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True)
    impl = [{k: g[k] for k in ("foreach", "fused") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kw in zip(optimizer.param_groups, impl, strict=True):
        group.update(kw)  # how the update runs is this process's choice, not the checkpoint's


def load_rng(ckpt: Path, rank: int) -> None:
    p = ckpt / f"rng-rank{rank}.pt"
    if not p.is_file():
        raise ValueError(f"{ckpt} has no RNG state for rank {rank}")
    set_rng_state(torch.load(p, weights_only=False))
