"""Model benchmark: frame-embedding throughput, train-step time and peak memory per HTSAT config.

Comparable with /work/shared/bench/peer_openflam_infer.py (OpenFLAM's get_local_audio_features on random
[B, 480000] input): `frames_*` rows time `FLAM.encode_audio` (front end + HTSAT + projection + L2 norm) on
the same input. Random init, no network: the text encoder is built from a local config dir
(default /work/shared/bench/roberta_base = roberta-base's architecture; --text-encoder to change).

    .venv/bin/python benchmarks/model.py                       # CPU: small/tiny/base, B=2, fp32
    OUT=/tmp/out .venv/bin/python benchmarks/model.py --configs base --batch-sizes 64,256 --dtypes fp32,bf16 \
        --compile off,on                                       # CUDA (the defaults on CUDA are similar)

With --paired-peer (needs PEER_SRC, and `lightning` importable) it first builds OpenFLAM's own model in the same
process, loads its random weights into ours through FLAM.from_openflam, reports the max output difference and
times both alternately on the same input (the fairest ratio on a shared machine).

`e2e_<config>_<dtype>[_compiled]` rows time the whole user path: --e2e-clips random 10-s clips (a list of numpy
arrays at 48 kHz) + 5 texts through FLAM.frame_probabilities_batch with inference_batch_size=--e2e-batch, host→device
transfer, text side, stitching and the probabilities back on the host included; beside them the peer's
frames-only clips/s of the paired section when present. They run for `base` (else the first config).

Prints one JSON object (updated after every row) and writes $OUT/model_bench.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: this file's name would shadow the `model` package

import numpy as np
import torch

from model import FLAM, FLAMConfig, TextConfig
from model.config import HTSAT_PRESETS
from model.text_encoder import load_text_model, load_tokenizer

DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "shared" / "bench" / "roberta_base"


def build(cfg_name: str, text_dir: Path, device: str) -> FLAM:
    text_model = load_text_model(text_dir, "pooler", weights=False)
    hidden = int(text_model.config.hidden_size)
    cfg = FLAMConfig(audio=HTSAT_PRESETS[cfg_name], text=TextConfig(path=str(text_dir), pooling="pooler",
                                                                   hidden_size=hidden))  # fmt: skip
    return FLAM(cfg, text_model, load_tokenizer(text_dir)).to(device)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_mem(device: str) -> dict:
    if device == "cuda":
        return {"peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    return {"process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def timed(fn, device: str, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t) / iters


def bench_frames(
    model: FLAM, b: int, dtype: str, compiled: bool, device: str, warmup: int, iters: int
) -> dict:
    model.eval()
    audio = torch.compile(model.audio_branch) if compiled else model.audio_branch
    x = torch.randn(b, 480000, device=device) * 0.1

    def f():
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            return model.project_audio(audio(x))

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    f()  # first call (compilation when compiled)
    sync(device)
    first = time.perf_counter() - t0
    s = timed(f, device, max(0, warmup - 1), iters)
    frames, _ = f()
    return {"clips_per_s": round(b / s, 1), "x_realtime": round(10 * b / s, 1), "ms_per_batch": round(1e3 * s, 1),
            "first_call_s": round(first, 1), "shape": list(frames.shape), **peak_mem(device)}  # fmt: skip


def bench_train(model: FLAM, b: int, dtype: str, device: str, warmup: int, iters: int, n_tokens: int) -> dict:
    """One forward + backward: audio [B, 480000] and B texts of n_tokens, a CLIP-style loss on clip/text."""
    model.train()
    x = torch.randn(b, 480000, device=device) * 0.1
    vocab = int(model.text_branch.config.vocab_size)
    ids = torch.randint(5, min(vocab, 1000), (b, n_tokens), device=device)
    ids[:, 0] = 0
    mask = torch.ones_like(ids)
    opt_params = [p for p in model.parameters() if p.requires_grad]

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            out = model(x, ids, mask)
            logits = out.logit_scale * out.clip.float() @ out.texts.float().T
            target = torch.arange(b, device=device)
            loss = torch.nn.functional.cross_entropy(logits, target) + out.frames.float().square().mean()
            loss = loss + (out.alpha.float().mean() + out.beta.float().mean()) * 1e-3
        loss.backward()
        for p in opt_params:
            p.grad = None

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    s = timed(step, device, warmup, iters)
    model.eval()
    return {"samples_per_s": round(b / s, 1), "ms_per_step": round(1e3 * s, 1), **peak_mem(device)}


def bench_pipeline(model: FLAM, device: str, seconds: float, n_texts: int, dtype: str, hop: int = 16) -> dict:
    """End to end: frame_probabilities on one long file (windows, stitching, text side included)."""
    model.eval()
    model.autocast_dtype = torch.bfloat16 if dtype == "bf16" else None
    model.inference_batch_size = 64 if device == "cuda" else 4
    model.inference_hop_frames = hop
    wave = (np.random.default_rng(0).standard_normal(int(seconds * 48000)) * 0.1).astype(np.float32)
    texts = [f"sound number {i}" for i in range(n_texts)]
    t = time.perf_counter()
    model.frame_probabilities(wave, 48000, texts)  # first call: pinned staging buffers, cuDNN/cuBLAS set-up
    sync(device)
    first = time.perf_counter() - t
    t = time.perf_counter()
    p = model.frame_probabilities(wave, 48000, texts)
    sync(device)
    s = time.perf_counter() - t
    model.autocast_dtype = None
    model.inference_hop_frames = 16
    return {"audio_s": seconds, "hop_frames": hop, "n_texts": n_texts, "wall_s": round(s, 2), "x_realtime": round(seconds / s, 1),
            "first_call_s": round(first, 2), "shape": list(p.shape)}  # fmt: skip


def bench_e2e(model: FLAM, device: str, n_clips: int, n_texts: int, dtype: str, compiled: bool, batch: int,
              iters: int, ref: list | None = None) -> tuple[dict, list]:  # fmt: skip
    """End to end as a user calls it: a list of N 10-s numpy clips at 48 kHz + texts through
    frame_probabilities_batch (host→device transfer, text side, stitching, probabilities back on the host)."""
    model.eval()
    model.autocast_dtype = torch.bfloat16 if dtype == "bf16" else None
    model.inference_batch_size = batch
    model.inference_hop_frames = 16
    rng = np.random.default_rng(0)
    waves = list(rng.standard_normal((n_clips, 480000), dtype=np.float32) * np.float32(0.1))
    texts = [f"sound number {i}" for i in range(n_texts)]
    if compiled:
        model.compile()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        t0 = time.perf_counter()
        probs = model.frame_probabilities_batch(waves, 48000, texts)  # first call (compilation when compiled)
        first = time.perf_counter() - t0
        s = timed(lambda: model.frame_probabilities_batch(waves, 48000, texts), device, 0, iters)
    finally:
        object.__setattr__(model, "_compiled_audio", None)  # back to eager for the other rows
        model.autocast_dtype = None
    row = {"n_clips": n_clips, "n_texts": n_texts, "batch": batch, "clips_per_s": round(n_clips / s, 1),
           "x_realtime": round(10 * n_clips / s, 1), "wall_s": round(s, 3), "first_call_s": round(first, 1),
           "out": [len(probs), *probs[0].shape], **peak_mem(device)}  # fmt: skip
    if ref is not None:  # e.g. compiled vs eager on the same clips
        row["max_abs_diff_vs_eager"] = float(
            max(np.abs(a - b).max() for a, b in zip(probs, ref, strict=True))
        )
    return row, probs


def find_peer_script() -> Path:
    """The shared peer script: $PEER_SCRIPT, else $PEER_SRC/peer_openflam_infer.py, else ../shared/bench/."""
    candidates = [os.environ.get("PEER_SCRIPT", ""), str(Path(os.environ.get("PEER_SRC", "."), "peer_openflam_infer.py")),
                  str(Path(__file__).resolve().parents[2] / "shared" / "bench" / "peer_openflam_infer.py")]  # fmt: skip
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    raise SystemExit(f"peer_openflam_infer.py not found (looked at {candidates}); set PEER_SCRIPT")


def default_text_dir() -> str:
    """roberta-base architecture config + toy tokenizer: ../shared/bench/roberta_base, else $PEER_SRC/roberta_base."""
    if DEFAULT_TEXT.is_dir() or not os.environ.get("PEER_SRC"):
        return str(DEFAULT_TEXT)
    return str(Path(os.environ["PEER_SRC"], "roberta_base"))


def bench_paired_peer(device: str, sizes: list[int], dtypes: list[str], iters: int, compiled: bool) -> dict:
    """Same process, same input: OpenFLAM's own model (random init, from $PEER_SRC via the shared peer script's
    setup) vs ours carrying ITS weights (imported with FLAM.from_openflam): output agreement + paired speed."""
    import tempfile

    peer_script = find_peer_script()
    setup = peer_script.read_text().split('dev = "cuda"')[
        0
    ]  # imports + librosa stand-in + roberta config patch
    ns = {"__file__": str(peer_script), "__name__": "peer_setup"}
    exec(compile(setup, str(peer_script), "exec"), ns)  # noqa: S102 - measurement only, peer code not copied
    torch.manual_seed(0)
    peer = ns["FLAM"](audio_cfg=ns["CLAPAudioCfg"](model_name="base", audio_embed_dim=1024),
                      text_cfg=ns["CLAPTextCfg"](connector_layers=12), joint_embed_shape=512,
                      fabric=ns["L"].Fabric(accelerator="cpu"), cache_dir=tempfile.mkdtemp()).eval()  # fmt: skip
    with torch.no_grad():
        bn = peer.audio_branch.bn0
        bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(peer.state_dict(), Path(tmp) / "peer.pth")
        ours = FLAM.from_openflam(Path(tmp) / "peer.pth", text_encoder=Path(ns["src"]) / "roberta_base")
    peer, ours = peer.to(device), ours.to(device)
    audio = torch.compile(ours.audio_branch) if compiled else ours.audio_branch
    res: dict = {}
    x = torch.randn(2, 480000, device=device) * 0.1
    with torch.inference_mode():
        ref = peer.get_local_audio_features(x)
        frames, _ = ours.encode_audio(x)
    res["max_abs_diff_frames_fp32"] = float((ref - frames).abs().max())
    for b in sizes:
        x = torch.randn(b, 480000, device=device) * 0.1
        for dtype in dtypes:
            ac = {"device_type": device, "dtype": torch.bfloat16, "enabled": dtype == "bf16"}

            def run_peer(x=x, ac=ac):
                with torch.inference_mode(), torch.autocast(**ac):
                    return peer.get_local_audio_features(x)

            def run_ours(x=x, ac=ac):
                with torch.inference_mode(), torch.autocast(**ac):
                    return ours.project_audio(audio(x))

            tp = to = 0.0
            run_peer(), run_ours()
            for _ in range(iters):  # alternate so both see the same machine load
                tp += timed(run_peer, device, 0, 1)
                to += timed(run_ours, device, 0, 1)
            res[f"B{b}_{dtype}" + ("_compiled" if compiled else "")] = {
                "peer_clips_per_s": round(b * iters / tp, 2), "ours_clips_per_s": round(b * iters / to, 2),
                "speedup": round(tp / to, 2),
            }  # fmt: skip
    return res


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="tiny,base" if cuda else "small,tiny,base")
    ap.add_argument("--batch-sizes", default="64,256" if cuda else "2")
    ap.add_argument("--dtypes", default="fp32,bf16" if cuda else "fp32")
    ap.add_argument(
        "--compile", default="off,on" if cuda else "off", help="off,on (compile only for base, bf16)"
    )
    ap.add_argument("--train-batch", type=int, default=64 if cuda else 2)
    ap.add_argument("--train-tokens", type=int, default=24)
    ap.add_argument("--pipeline-seconds", type=float, default=600.0 if cuda else 60.0)
    ap.add_argument("--text-encoder", default=default_text_dir(), help="local HF dir (config + tokenizer)")
    ap.add_argument("--warmup", type=int, default=3 if cuda else 1)
    ap.add_argument("--iters", type=int, default=10 if cuda else 2)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: frames,train,pipeline,e2e")
    ap.add_argument("--e2e-clips", type=int, default=1024 if cuda else 8, help="clips in the end-to-end rows")
    ap.add_argument("--e2e-batch", type=int, default=256 if cuda else 4, help="inference_batch_size there")
    ap.add_argument(
        "--paired-peer", action="store_true", help="also time OpenFLAM's model from $PEER_SRC here"
    )
    ap.add_argument(
        "--tf32", action="store_true", help="allow TF32 matmuls in fp32 rows (off = like the peer)"
    )
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = "cuda" if cuda else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    skip = set(filter(None, args.skip.split(",")))
    res: dict = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "text_encoder": args.text_encoder,
    }  # fmt: skip
    out_dir = os.environ.get("OUT")

    def emit():
        print(json.dumps(res), flush=True)
        if out_dir:
            Path(out_dir, "model_bench.json").write_text(json.dumps(res, indent=1))

    if args.paired_peer:
        if not os.environ.get("PEER_SRC"):
            raise SystemExit("--paired-peer needs PEER_SRC (see /work/shared/bench/prepare_peers.sh)")
        sizes = list(map(int, args.batch_sizes.split(",")))
        dtypes = args.dtypes.split(",")
        res["paired_openflam"] = bench_paired_peer(device, sizes, dtypes, args.iters, False)
        emit()
        if "on" in args.compile.split(",") and cuda:
            res["paired_openflam_compiled"] = bench_paired_peer(device, sizes, ["bf16"], args.iters, True)
            emit()
    torch.manual_seed(0)
    for name in args.configs.split(","):
        model = build(name, Path(args.text_encoder), device)
        res[f"{name}_params_m"] = round(sum(p.numel() for p in model.audio_branch.parameters()) / 1e6, 1)
        if "frames" not in skip:
            for b in map(int, args.batch_sizes.split(",")):
                for dtype in args.dtypes.split(","):
                    for comp in args.compile.split(","):
                        on = comp == "on"
                        if on and (name != "base" or dtype != "bf16" and cuda):
                            continue
                        key = f"frames_{name}_B{b}_{dtype}" + ("_compiled" if on else "")
                        try:
                            res[key] = bench_frames(model, b, dtype, on, device, args.warmup, args.iters)
                        except Exception as e:  # noqa: BLE001 - keep the other rows (e.g. OOM)
                            res[key] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                        emit()
                        if cuda:
                            torch.cuda.empty_cache()
        if "train" not in skip:
            for dtype in args.dtypes.split(",")[-1:]:
                key = f"train_{name}_B{args.train_batch}_{dtype}"
                try:
                    res[key] = bench_train(model, args.train_batch, dtype, device, args.warmup, args.iters,
                                           args.train_tokens)  # fmt: skip
                except Exception as e:  # noqa: BLE001
                    res[key] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                emit()
        if "pipeline" not in skip and name == "base":
            dtype = args.dtypes.split(",")[-1]
            for hop in (16, 24):
                res[f"pipeline_{name}_{dtype}_hop{hop}"] = bench_pipeline(
                    model, device, args.pipeline_seconds, 5, dtype, hop
                )
                emit()
        e2e_name = "base" if "base" in args.configs.split(",") else args.configs.split(",")[0]
        if "e2e" not in skip and name == e2e_name:
            dtype = args.dtypes.split(",")[-1]
            peer = (
                res.get("paired_openflam", {}).get(f"B{args.e2e_batch}_{dtype}", {}).get("peer_clips_per_s")
            )
            eager = None
            for comp in args.compile.split(","):
                key = f"e2e_{name}_{dtype}" + ("_compiled" if comp == "on" else "")
                try:
                    row, probs = bench_e2e(model, device, args.e2e_clips, 5, dtype, comp == "on", args.e2e_batch,
                                           3 if cuda else 1, eager)  # fmt: skip
                    eager = probs if comp == "off" else eager
                    # beside it the peer's frames-only number (no text side, no stitching, input already on GPU)
                    if peer:
                        row |= {"peer_frames_clips_per_s": peer, "speedup_vs_peer_frames": round(row["clips_per_s"] / peer, 2)}  # fmt: skip
                    res[key] = row
                except Exception as e:  # noqa: BLE001
                    res[key] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                emit()
                if cuda:
                    torch.cuda.empty_cache()
        del model
        if cuda:
            torch.cuda.empty_cache()
    emit()


if __name__ == "__main__":
    main()
