"""Loader benchmark: the trainer's two-stream loader against plain FLAC decoding of the same shards.

Ours: `model.train.data.TrainStream` + `make_loader` (forkserver workers) building per-rank batches from real
shards — tar walk + shuffle buffers, FLAC decode, the C.5 resampling augmentation (resample_prob 0.3 by
default), caption/tag choice, SED labels and text slots (`build_text_slots`), `np.stack` of the waves — as
`clips/s` and `clips/s per worker core` = clips/s ÷ min(workers, cores available) (0 workers: 1 core).

Baseline, in the same run (before and after the loader): soundfile decoding of every `.flac` member of the same
shards in one process (tar reading included, page cache warm), repeated until --decode-min-clips clips.
Ratio = loader per worker core ÷ plain decode (mean of both rounds); target ≥ 80 %.

Online row (`--online MANIFEST`, issue 12): the SED stream alone (`--sed-batch` mixtures per batch, same
workers) from the shards of `--mixtures` and from an `online` source of the manifest's train split
(`model.train.online`: spec sampling, mixing, relabeling and 16-bit rounding in the workers, sources from a
memory-mapped `synth.bank.SourceBank`), alternating shards / online for --online-rounds rounds; mixtures/s per
worker core of both and their ratio (target ≥ 100 %). During each online run the worker processes' Rss and Pss
are read from /proc (in total and for the bank's mapped files): Rss counts shared pages in every process, Pss
divides them among the sharers, so N workers sharing one copy of the bank show bank Pss ≈ bank Rss / N.

Batches before --warmup-batches (default 2 per worker: worker start-up, first shuffle buffers) are not timed;
`in_worker_*` is the rate from the batches' own build time (`data_time`, inside the workers), free of the
main process and of queueing.

    uv run python benchmarks/loader.py --workers 2                     # data/mixtures/train + data/audio_text/train
    python benchmarks/loader.py --workers 16 --global-batch 64 --sed-batch 64 --json $OUT/loader.json
    uv run python benchmarks/loader.py --workers 1 --sed-batch 8 --online data/manifest.parquet \
        --mixtures data/mixtures/train --online-only
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: benchmarks/model.py would shadow the `model` package

import soundfile as sf
import torch

from model.train.config import DataConfig, SourceConfig
from model.train.data import TrainStream, make_loader, resolve_sources

REPO = Path(__file__).resolve().parents[1]


def warm_cache(paths: list[str]) -> int:
    n = 0
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                n += len(chunk)
    return n


def plain_decode(paths: list[str], min_clips: int) -> dict:
    """soundfile of every .flac member of the shards (one process), passes until min_clips clips."""
    clips, samples = 0, 0
    t = time.perf_counter()
    cpu = time.process_time()
    while clips < min_clips:
        for p in paths:
            with tarfile.open(p, "r:") as tar:
                for info in tar:
                    if info.isfile() and info.name.endswith(".flac"):
                        x, _ = sf.read(io.BytesIO(tar.extractfile(info).read()), dtype="float32")
                        clips += 1
                        samples += x.shape[0]
        if clips == 0:
            raise SystemExit(f"no .flac member in {paths}")
    wall = time.perf_counter() - t
    return {"clips": clips, "wall_s": round(wall, 3), "clips_per_s": round(clips / wall, 2),
            "ms_per_clip": round(1e3 * wall / clips, 3), "cpu_s": round(time.process_time() - cpu, 3),
            "audio_s_per_clip": round(samples / clips / 48000, 2)}  # fmt: skip


def run_loader(args: argparse.Namespace, cores: int) -> dict:
    d = DataConfig(
        global_sources=(SourceConfig(name="audio_text", shards=args.audio_text),) if args.global_batch else (),
        sed_sources=(SourceConfig(name="mixtures", shards=args.mixtures),) if args.sed_batch else (),
        global_batch=args.global_batch, sed_batch=args.sed_batch, num_workers=args.workers,
        resample_prob=args.resample_prob,
    )  # fmt: skip
    sources = {
        "global": resolve_sources(d.global_sources, "global"),
        "sed": resolve_sources(d.sed_sources, "sed"),
    }
    return measure(d, sources, args, cores)


def measure(d: DataConfig, sources: dict, args: argparse.Namespace, cores: int, bank: str = "") -> dict:
    """Time the trainer's loader on `sources`; with `bank`, also the memory of the worker processes."""
    warm = args.warmup_batches if args.warmup_batches >= 0 else 2 * max(args.workers, 1)
    stream = TrainStream(d, sources, args.seed, 32, 0, 1, 0, warm + args.batches)
    loader = make_loader(stream, pin_memory=args.pin_memory, seed=args.seed)
    t_start = time.perf_counter()
    clips = timed_clips = 0
    data_times, skipped, dropped, slots = [], 0, 0, []
    t0 = None
    memory = None
    it = iter(loader)
    for i, batch in enumerate(it):
        if i == warm:
            t0 = time.perf_counter()
            first_s = t0 - t_start
        if i == warm + args.batches // 2:  # every worker has built many batches by now
            memory = worker_memory(it, bank or "\0")
        n = int(batch["wave"].shape[0])
        clips += n
        if t0 is not None:
            timed_clips += n
            data_times.append(batch["data_time"])
        skipped += sum(batch["skipped"].values())
        dropped += int(batch.get("n_dropped_texts", 0))
        if "text_mask" in batch:
            slots.append(int(batch["text_mask"].sum()))
    wall = time.perf_counter() - t0
    used = min(max(args.workers, 1), cores)
    rate = timed_clips / wall
    per_batch = timed_clips / len(data_times)
    in_worker = per_batch / statistics.fmean(data_times)
    out = {
        "workers": args.workers, "cores_used": used, "global_batch": d.global_batch, "sed_batch": d.sed_batch,
        "resample_prob": args.resample_prob, "pin_memory": args.pin_memory, "warmup_batches": warm,
        "timed_batches": len(data_times), "timed_clips": timed_clips, "startup_s": round(first_s, 2),
        "wall_s": round(wall, 3), "clips_per_s": round(rate, 2), "clips_per_s_per_worker_core": round(rate / used, 2),
        "in_worker_ms_per_clip": round(1e3 / in_worker, 3), "in_worker_clips_per_s": round(in_worker, 2),
        "skipped_samples": skipped, "dropped_texts": dropped,
        "valid_slots_mean": round(statistics.fmean(slots), 1) if slots else None,
    }  # fmt: skip
    out["memory"] = memory
    return out


def _smaps(pid: int, bank: str) -> dict:
    """Rss / Pss (kB) of a process in total and of its mappings of files under `bank`."""
    tot = {"rss_kb": 0, "pss_kb": 0, "bank_rss_kb": 0, "bank_pss_kb": 0}
    in_bank = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if not head:
                continue
            if not head[0].endswith(":"):  # a mapping header: address perms offset dev inode [path]
                in_bank = len(head) >= 6 and head[5].startswith(bank)
                continue
            if head[0] in ("Rss:", "Pss:"):
                key = head[0][:-1].lower() + "_kb"
                tot[key] += int(head[1])
                if in_bank:
                    tot["bank_" + key] += int(head[1])
    return tot


def worker_memory(it: object, bank: str) -> dict:
    """Memory of the loader's worker processes (Linux /proc): each one's Rss and Pss, total and of the bank's
    mapped files (Rss counts shared pages in full in every process, Pss divides them among the sharers)."""
    workers = getattr(it, "_workers", [])  # torch's multi-process iterator keeps its processes here
    per = [_smaps(w.pid, bank) for w in workers]
    if not per:  # num_workers=0: the bank is mapped by this process
        per = [_smaps(os.getpid(), bank)]
    mb = lambda kb: round(kb / 1024, 1)  # noqa: E731
    return {
        "processes": len(per),
        "rss_mb_each": [mb(p["rss_kb"]) for p in per], "pss_mb_each": [mb(p["pss_kb"]) for p in per],
        "bank_rss_mb_each": [mb(p["bank_rss_kb"]) for p in per], "bank_pss_mb_each": [mb(p["bank_pss_kb"]) for p in per],
        "bank_pss_mb_sum": mb(sum(p["bank_pss_kb"] for p in per)), "pss_mb_sum": mb(sum(p["pss_kb"] for p in per)),
    }  # fmt: skip


def run_online(args: argparse.Namespace, cores: int) -> dict:
    """The SED stream from shards and from an online source, same workers and batch, alternating
    (shards, online, shards, online); the source bank is built (or found) first and timed apart."""
    from model.train.config import BankConfig
    from model.train.data import BankPlace

    bank_cfg = BankConfig(dtype=args.bank_dtype, energy=args.bank_energy, build_workers=args.bank_workers)
    base = DataConfig(global_batch=0, sed_batch=args.sed_batch, num_workers=args.workers,
                      resample_prob=args.resample_prob, bank=bank_cfg)  # fmt: skip
    d_on = replace(base, sed_sources=(SourceConfig(name="online", kind="online", manifest=args.online),))
    d_sh = replace(base, sed_sources=(SourceConfig(name="mixtures", shards=args.mixtures),))
    t = time.perf_counter()
    on_sources = {
        "global": [],
        "sed": resolve_sources(d_on.sed_sources, "sed", BankPlace(Path(args.bank_dir), bank_cfg)),
    }
    bank_s = time.perf_counter() - t
    folder = on_sources["sed"][0].bank_folder
    meta = json.loads((Path(folder) / "bank.json").read_text())
    sh_sources = {"global": [], "sed": resolve_sources(d_sh.sed_sources, "sed")}
    cpu = cpu_interleaved(replace(d_sh, num_workers=0), sh_sources, replace(d_on, num_workers=0), on_sources,
                          args)  # fmt: skip
    print(json.dumps({"cpu_interleaved": cpu}), flush=True)
    rounds = []
    for r in range(args.online_rounds):
        rounds.append({"round": r + 1, "shards": measure(d_sh, sh_sources, args, cores),
                       "online": measure(d_on, on_sources, args, cores, bank=folder)})  # fmt: skip
        print(json.dumps(rounds[-1]), flush=True)
    sh = statistics.fmean(x["shards"]["clips_per_s_per_worker_core"] for x in rounds)
    on = statistics.fmean(x["online"]["clips_per_s_per_worker_core"] for x in rounds)
    return {
        "manifest": args.online, "bank": folder, "bank_prepare_s": round(bank_s, 2),
        "bank_sources": meta["sources"], "bank_samples": meta["samples"], "bank_build_s": meta["build_s"],
        "bank_bytes": {k: meta.get(f"{k}_bytes", 0) for k in ("audio", "energy", "blocks")},
        "bank_options": meta["options"], "rounds": rounds,
        "shards_mixtures_per_s_per_core": round(sh, 2), "online_mixtures_per_s_per_core": round(on, 2),
        "ratio_online_to_shards": round(on / sh, 3), "cpu_interleaved": cpu,
    }  # fmt: skip


def cpu_interleaved(d_sh: DataConfig, sh: dict, d_on: DataConfig, on: dict, args: argparse.Namespace) -> dict:
    """CPU ms per mixture of whole SED batches in this process (num_workers=0), shards and online batch by batch
    alternately: robust to the machine's load (both see the same), free of worker start-up and IPC."""
    n = max(10, -(-200 // args.sed_batch))
    its = {"shards": iter(TrainStream(d_sh, sh, args.seed, 32, 0, 1, 0, n + 3)),
           "online": iter(TrainStream(d_on, on, args.seed, 32, 0, 1, 0, n + 3))}  # fmt: skip
    cpu = dict.fromkeys(its, 0.0)
    for i in range(n + 3):
        for name, it in its.items():
            t = time.process_time()
            next(it)
            if i >= 3:  # shuffle buffers filled, bank pages touched
                cpu[name] += time.process_time() - t
    ms = {k: 1e3 * v / (n * args.sed_batch) for k, v in cpu.items()}
    return {"batches": n, "shards_cpu_ms_per_mixture": round(ms["shards"], 3),
            "online_cpu_ms_per_mixture": round(ms["online"], 3),
            "ratio_online_to_shards": round(ms["shards"] / ms["online"], 3)}  # fmt: skip


def stages(args: argparse.Namespace, n_batches: int) -> dict:
    """ms per clip of the loader's stages, in this process (num_workers=0, the trainer's own functions timed
    through their module globals in model.train.data): decode, augment, labels (per-sample check + the
    batch's text slots); the rest is the tar walk, reading, JSON, text choice and np.stack."""
    from model.train import data as D

    names = ("decode_clip", "augment", "build_text_slots")
    spent: dict[str, float] = {
        n: 0.0 for n in names if callable(getattr(D, n, None))
    }  # as the module has them
    originals = {name: getattr(D, name) for name in spent}

    def wrap(name: str):  # noqa: ANN202
        fn = originals[name]

        def timed(*a, **k):  # noqa: ANN002, ANN003, ANN202
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t

        return timed

    d = DataConfig(
        global_sources=(SourceConfig(name="audio_text", shards=args.audio_text),) if args.global_batch else (),
        sed_sources=(SourceConfig(name="mixtures", shards=args.mixtures),) if args.sed_batch else (),
        global_batch=args.global_batch, sed_batch=args.sed_batch, num_workers=0, resample_prob=args.resample_prob,
    )  # fmt: skip
    sources = {
        "global": resolve_sources(d.global_sources, "global"),
        "sed": resolve_sources(d.sed_sources, "sed"),
    }
    it = iter(TrainStream(d, sources, args.seed, 32, 0, 1, 0, n_batches + 2))
    next(it), next(it)  # shuffle buffers filled
    for name in spent:
        setattr(D, name, wrap(name))
    try:
        clips = 0
        t = time.perf_counter()
        for batch in it:
            clips += int(batch["wave"].shape[0])
        total = time.perf_counter() - t
    finally:
        for name, fn in originals.items():
            setattr(D, name, fn)
    out = {f"{k}_ms": round(1e3 * v / clips, 3) for k, v in spent.items()}
    out["other_ms"] = round(1e3 * (total - sum(spent.values())) / clips, 3)
    out["total_ms"] = round(1e3 * total / clips, 3)
    out["clips"] = clips
    if "decode_clip_ms" in out:  # interleaved in one process, so robust to machine load; no IPC in it
        out["decode_share"] = round(out["decode_clip_ms"] / out["total_ms"], 3)
    return out


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mixtures", default=str(REPO / "data" / "mixtures" / "train"), help="SED shards")
    ap.add_argument("--audio-text", default=str(REPO / "data" / "audio_text" / "train"), help="global shards")
    ap.add_argument("--workers", type=int, default=min(cores, 16), help="loader worker processes")
    ap.add_argument("--batches", type=int, default=0, help="timed batches (default: ≥ 400 clips, ≥ 4/worker)")
    ap.add_argument("--warmup-batches", type=int, default=-1, help="untimed first batches (default 2/worker)")
    ap.add_argument("--global-batch", type=int, default=8, help="audio-text clips per batch")
    ap.add_argument("--sed-batch", type=int, default=8, help="mixtures per batch")
    ap.add_argument("--resample-prob", type=float, default=0.3, help="C.5 augmentation share")
    ap.add_argument("--pin-memory", action="store_true", help="as the trainer on CUDA")
    ap.add_argument("--decode-min-clips", type=int, default=300, help="plain-decode baseline size per round")
    ap.add_argument("--stage-batches", type=int, default=0, help="batches of the in-process stage breakdown "
                    "(default: ≥ 200 clips; -1 = skip it)")  # fmt: skip
    ap.add_argument(
        "--online",
        default="",
        metavar="MANIFEST",
        help="also time the SED stream from an online "
        "source of this manifest (train split) against --mixtures, same workers and --sed-batch",
    )
    ap.add_argument("--online-only", action="store_true", help="only the --online comparison")
    ap.add_argument("--online-rounds", type=int, default=2, help="alternating shards/online rounds")
    ap.add_argument("--bank-dir", default="/tmp/flam-bench-bank", help="where the source bank is built/found")
    ap.add_argument("--bank-dtype", default="int16", choices=("int16", "float32"))
    ap.add_argument(
        "--bank-energy",
        type=lambda v: v.lower() in ("1", "true", "yes"),
        default=True,
        help="store events' cumulative energy in the bank (true/false)",
    )
    ap.add_argument("--bank-workers", type=int, default=0, help="bank build processes (0 = one per core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.pin_memory and not torch.cuda.is_available():
        raise SystemExit("--pin-memory needs CUDA")
    per_batch = args.global_batch + args.sed_batch
    if args.batches <= 0:
        args.batches = max(4 * max(args.workers, 1), -(-400 // per_batch))
    paths = [s for spec in (args.audio_text, args.mixtures) for src in resolve_sources(
        [SourceConfig(name="x", shards=spec)], "bench") for s in src.shards]  # fmt: skip

    res: dict = {
        "host": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": cores,
        "load_avg_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__, "date": time.strftime("%F %T %Z"),
        "shards": [os.path.relpath(p, REPO) if p.startswith(str(REPO)) else p for p in paths],
        "shard_bytes": warm_cache(paths),
    }  # fmt: skip

    def emit() -> None:
        print(json.dumps(res), flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(res, indent=1))

    if args.online:
        res["online"] = run_online(args, cores)
        o = res["online"]
        emit()
        c = o["cpu_interleaved"]
        print(f"\nSED stream, {args.workers} worker(s), batch {args.sed_batch}: shards "
              f"{o['shards_mixtures_per_s_per_core']} mixtures/s per worker core, online "
              f"{o['online_mixtures_per_s_per_core']} ({100 * o['ratio_online_to_shards']:.0f} %; target ≥ 100 %)\n"
              f"one process, interleaved: shards {c['shards_cpu_ms_per_mixture']} CPU ms per mixture, online "
              f"{c['online_cpu_ms_per_mixture']} ({100 * c['ratio_online_to_shards']:.0f} %)", flush=True)  # fmt: skip
        if args.online_only:
            return
    res["plain_decode_before"] = plain_decode(paths, args.decode_min_clips)
    emit()
    res["loader"] = run_loader(args, cores)
    emit()
    res["plain_decode_after"] = plain_decode(paths, args.decode_min_clips)
    base = statistics.fmean(
        [res["plain_decode_before"]["clips_per_s"], res["plain_decode_after"]["clips_per_s"]]
    )
    lo = res["loader"]
    res["plain_decode_clips_per_s"] = round(base, 2)
    res["ratio_per_core"] = round(lo["clips_per_s_per_worker_core"] / base, 3)
    res["ratio_in_worker"] = round(lo["in_worker_clips_per_s"] / base, 3)
    emit()
    if args.stage_batches >= 0:
        res["stages_ms_per_clip"] = stages(args, args.stage_batches or -(-200 // per_batch))
    res["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    emit()
    print(
        f"\nloader: {args.workers} worker(s) on {cores} core(s), batches {args.global_batch}+{args.sed_batch}, "
        f"resample_prob {args.resample_prob}: {lo['clips_per_s']} clips/s = {lo['clips_per_s_per_worker_core']} "
        f"per worker core ({lo['timed_clips']} clips timed; in-worker {lo['in_worker_clips_per_s']} clips/s)\n"
        f"plain FLAC decode, 1 process: {res['plain_decode_before']['clips_per_s']} / "
        f"{res['plain_decode_after']['clips_per_s']} clips/s (before / after)\n"
        f"ratio per core: {100 * res['ratio_per_core']:.0f} % (target ≥ 80 %); in-worker: "
        f"{100 * res['ratio_in_worker']:.0f} %",
        flush=True,
    )
    if "stages_ms_per_clip" in res:
        print(f"stages, ms per clip (1 process): {res['stages_ms_per_clip']}")


if __name__ == "__main__":
    main()
