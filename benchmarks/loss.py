"""SED + prior loss benchmark: forward+backward time and peak memory per rank, ring vs bidir vs gather.

Each (world size, impl) runs in W fresh forked processes (gloo on CPU, NCCL with --device cuda and W GPUs).
Per rank it reports the median forward+backward time, the bytes autograd keeps between forward and
backward (saved tensors, unique storages), and the peak memory during one forward+backward above the
memory held before it (CPU: VmHWM after resetting it via /proc/self/clear_refs; CUDA: max_memory_allocated).
The module docstring of ``model.loss`` gives the model: ring/bidir ≈ W·K·(D+2) + c·B·K·L floats,
gather ≈ W·K·(D+2) + c·W·B·K·L floats.

    uv run --no-sync python benchmarks/loss.py [--worlds 1,2,4] [--B 64] [--L 32] [--D 512] [--json out.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from model.loss import sed_and_prior_loss  # noqa: E402

VARIANTS = {
    "ring": ("ring", True),
    "bidir": ("bidir", True),
    "ring-norecompute": ("ring", False),
    "gather": ("gather", False),
}


def make_inputs(rank, args, device):
    g = torch.Generator().manual_seed(rank)
    k = 5 * args.B
    frames = torch.nn.functional.normalize(torch.randn(args.B, args.L, args.D, generator=g), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(k, args.D, generator=g), dim=-1)
    alpha, beta = torch.rand(k, generator=g) * 10, torch.randn(k, generator=g)
    text_ids = torch.randint(0, 4 * k, (k,), generator=g)  # ~ some ids shared across ranks
    text_mask = torch.rand(k, generator=g) < 0.9
    event_ids = text_ids[torch.randint(0, k, (args.B, args.E), generator=g)]
    event_frames = torch.rand(args.B, args.E, args.L, generator=g) < 0.3
    floats = [t.to(device).requires_grad_() for t in (frames, texts, alpha, beta)]
    return floats, [t.to(device) for t in (text_ids, text_mask, event_ids, event_frames)]


def _rss_peak_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return -1


def _mmap_large_allocations() -> None:
    """glibc: serve allocations ≥ 64 KiB by mmap and unmap them on free, so RSS follows live tensors."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD (fixed: no dynamic growth)
    except OSError:
        pass


def _worker(rank, world, args, variant, init_file, out_dir):
    torch.set_num_threads(1)
    _mmap_large_allocations()
    cuda = args.device == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if cuda else "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=300),
    )  # fmt: skip
    impl, recompute = VARIANTS[variant]
    floats, rest = make_inputs(rank, args, device)

    def step():
        l_sed, l_prior = sed_and_prior_loss(*floats, *rest, impl=impl, recompute=recompute)
        (200 * l_sed + l_prior).backward()
        for t in floats:
            t.grad = None
        if cuda:
            torch.cuda.synchronize()

    # bytes autograd keeps between forward and backward
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    step()  # warm-up: lazy initialisation must not count as loss memory
    dist.barrier()
    input_ptrs = {t.untyped_storage().data_ptr() for t in floats + rest}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        reset_ok, before = _rss_peak_reset(), _vm("VmRSS")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        l_sed, l_prior = sed_and_prior_loss(*floats, *rest, impl=impl, recompute=recompute)
    (200 * l_sed + l_prior).backward()
    peak = torch.cuda.max_memory_allocated() - before if cuda else (_vm("VmHWM") - before if reset_ok else -1)
    autograd_bytes = sum(n for p, n in saved.items() if p not in input_ptrs)
    for t in floats:
        t.grad = None
    times = []
    for _ in range(args.reps):
        dist.barrier()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    result = {"time_s": statistics.median(times), "peak_bytes": peak, "autograd_bytes": autograd_bytes}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def run(world, variant, args):
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(
            _worker,
            args=(world, args, variant, f"{tmp}/init", tmp),
            nprocs=world,
            join=True,
            start_method="fork",
        )
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    return {k: max(r[k] for r in ranks) for k in ranks[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default="1,2,4")
    ap.add_argument("--impls", default=",".join(VARIANTS))
    ap.add_argument("--B", type=int, default=64, help="clips per rank (K = 5·B text slots)")
    ap.add_argument("--L", type=int, default=32)
    ap.add_argument("--D", type=int, default=512)
    ap.add_argument("--E", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    k = 5 * args.B
    unit = 4 / 2**20  # float32 MiB
    print(f"device={args.device} B={args.B} K={k} L={args.L} D={args.D} E={args.E} (per rank)")
    print(
        f"  block K·(D+2) = {k * (args.D + 2) * unit:.2f} MiB, B·K·L = {args.B * k * args.L * unit:.2f} MiB"
    )
    print(f"{'W':>2} {'impl':<17} {'fwd+bwd s':>10} {'peak MiB':>9} {'autograd MiB':>13}")
    rows = []
    for world in [int(w) for w in args.worlds.split(",")]:
        for variant in args.impls.split(","):
            r = run(world, variant, args)
            rows.append({"world": world, "impl": variant, **r})
            print(
                f"{world:>2} {variant:<17} {r['time_s']:>10.3f} {r['peak_bytes'] / 2**20:>9.1f}"
                f" {r['autograd_bytes'] / 2**20:>13.1f}",
                flush=True,
            )
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
