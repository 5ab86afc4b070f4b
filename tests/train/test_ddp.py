"""Two real gloo processes under DDP match one process on the same global batch (losses and weights).

Per-process randomness is switched off for the comparison: drop path 0, no SpecAugment, no resampling,
BatchNorm on running statistics (`model.batchnorm=frozen`; with "train" each rank normalises by its own
batch, as LAION-CLAP does) and the text encoder's dropout off.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from model.train.config import load
from model.train.data import collate
from tests.conftest import REPO_ROOT
from tests.train.test_data import data_cfg, stream

STEPS = 3
OVERRIDES = [
    "data.global_batch=4", "data.sed_batch=4", "data.num_workers=0", "data.overflow=grow",
    "data.resample_prob=0", "model.drop_path_rate=0", "model.spec_augment=false", "model.batchnorm=frozen",
    "run.progress=false", "run.tensorboard=false", "optim.warmup_steps=1", "optim.lr=1e-3",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank: int, world: int, port: int, shards: str, out: str, samples: list, result: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), HF_HUB_OFFLINE="1")  # fmt: skip
    if world == 1:
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            os.environ.pop(k)
    torch.set_num_threads(1)
    from model.train.trainer import Trainer

    cfg = load(REPO_ROOT / "configs/train/tiny-cpu.yaml", OVERRIDES, **{
        "data.sed_sources": [{"name": "m", "shards": f"{shards}/mixtures/train"}],
        "data.global_sources": [{"name": "a", "shards": f"{shards}/audio_text/train"}],
    })  # fmt: skip
    t = Trainer(cfg, out)
    try:
        t.setup()
        t.model.text_branch.eval()  # dropout draws differ per process
        losses = []
        for step in range(STEPS):
            g, s = samples[step]
            per = len(g) // world
            batch = collate(g[rank * per : (rank + 1) * per], s[rank * per : (rank + 1) * per], cfg.data, 32)
            report, applied = t.train_step(batch)
            assert applied
            t.step += 1
            losses.append([report["loss"], report["l_clip"], report["l_sed"], report["l_prior"]])
        if rank == 0:
            result["losses"] = losses
            result["state"] = {k: v.detach().clone() for k, v in t.model.state_dict().items()}
    finally:
        t.cleanup()


def _worker(rank, world, port, shards, out, samples):  # noqa: ANN001
    result: dict = {}
    _run(rank, world, port, shards, out, samples, result)
    if rank == 0:
        torch.save(result, f"{out}.result.pt")


def _launch(world: int, shards: str, out: str, samples: list) -> dict:
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, shards, out, samples)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 300
    while any(p.exitcode is None for p in procs):
        if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
            for p in procs:
                p.kill()
            pytest.fail(f"a rank failed or timed out (exit codes {[p.exitcode for p in procs]})")
        time.sleep(0.2)
    assert all(p.exitcode == 0 for p in procs)
    return torch.load(f"{out}.result.pt")


def test_two_gloo_processes_match_one_process(train_shards, tmp_path):
    cfg = data_cfg(train_shards, global_batch=4, sed_batch=4, resample_prob=0.0, interval_steps=100)
    s = stream(cfg, 0, STEPS)
    s._enter(0)
    samples = [([s._next_sample("global") for _ in range(4)], [s._next_sample("sed") for _ in range(4)])
               for _ in range(STEPS)]  # fmt: skip
    one = _launch(1, str(train_shards), str(tmp_path / "one"), samples)
    two = _launch(2, str(train_shards), str(tmp_path / "two"), samples)
    for step, (a, b) in enumerate(zip(one["losses"], two["losses"], strict=True)):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6), f"step {step}: {b} vs {a}"
    worst = max(float((one["state"][k].float() - two["state"][k].float()).abs().max()) for k in one["state"])
    assert worst < 2e-5, worst
