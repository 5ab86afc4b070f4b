"""Render benchmark: milliseconds per 10-s mixture per core, with a stage breakdown.

One process, one thread (OMP/OPENBLAS/MKL threads = 1, pinned to one CPU where the OS allows). Stages per
mixture: sample spec, load (AudioCache hits), mix (pieces, fades, gains, sum, clip guard), relabel
(A-weighting, frame power, post-processing, merge), FLAC encode. Sources are decoded once up front (the
cold-decode cost is reported separately, per file and per mixture-equivalent, with the one-off
A-weighting and loudness per file and the block energies per background), so the timed pass runs with a
warm cache, as a long-running render worker does.

    uv run --no-sync python benchmarks/render.py [--corpus ../shared/corpus/dev] [-n 300] [--json out.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from synth.flac import encode_flac  # noqa: E402
from synth.render import render_mixture  # noqa: E402
from synth.source_cache import AudioCache  # noqa: E402
from synth.spec import MixtureConfig, SourcePool, sample_spec  # noqa: E402

STAGES = ("sample_spec", "load", "mix", "relabel", "flac_encode")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_manifest_rows(corpus: Path) -> tuple[list[dict], float]:
    """Manifest rows for the corpus via synth.ingest (probe only; loudness is measured below)."""
    from synth.ingest import IngestConfig, ingest_corpus

    t0 = time.perf_counter()
    res = ingest_corpus(corpus, cfg=IngestConfig(verify_decode=False))
    if res.skipped:
        print(
            f"ingest skipped {len(res.skipped)} files: {res.counts.get('skipped_by_reason')}", file=sys.stderr
        )
    return res.table.to_pylist(), time.perf_counter() - t0


CLOCKS = (("wall", time.perf_counter), ("cpu", time.thread_time))


def timed_pass(pool: SourcePool, cfg: MixtureConfig, cache: AudioCache, seed: int, n: int, clock) -> dict:
    stage = dict.fromkeys(STAGES, 0.0)
    per_mix_ms, flac_bytes, n_events, n_sources, clipped, dropped = [], 0, 0, 0, 0, 0
    for i in range(n):
        t0 = clock()
        spec = sample_spec(pool, cfg, seed, i)
        t1 = clock()
        out = render_mixture(spec, cache, cfg, timings=stage, clock=clock)
        t2 = clock()
        data = encode_flac(out.audio, cfg.sample_rate)
        t3 = clock()
        stage["sample_spec"] += t1 - t0
        stage["flac_encode"] += t3 - t2
        per_mix_ms.append((t3 - t0) * 1e3)
        flac_bytes += len(data)
        n_events += len(spec.events)
        n_sources += len({e.id for e in spec.events}) + (spec.background is not None)
        clipped += out.clip_scale < 1.0
        dropped += out.dropped_events
    return {
        "ms_per_mixture": round(statistics.fmean(per_mix_ms), 3),
        "ms_per_mixture_median": round(statistics.median(per_mix_ms), 3),
        "ms_per_mixture_p90": round(float(np.percentile(per_mix_ms, 90)), 3),
        "stages_ms_per_mixture": {k: round(v * 1e3 / n, 3) for k, v in stage.items()},
        "flac_bytes": flac_bytes,
        "n_events": n_events,
        "n_sources": n_sources,
        "clipped": clipped,
        "dropped": dropped,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared/corpus/dev")
    ap.add_argument("-n", "--mixtures", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="train")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the first allowed)")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON result here")
    args = ap.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
    load_before = os.getloadavg()

    rows, ingest_s = build_manifest_rows(args.corpus)
    cfg = MixtureConfig()
    sr = cfg.sample_rate
    cache = AudioCache.from_manifest(rows, max_bytes=8 << 30)
    used = [r for r in rows if r["split"] == args.split and r["kind"] in ("event", "background")]

    # cold decode: every source of the split once (decode + resample to 48 kHz mono), then its loudness
    decode_ms, audio_s = [], 0.0
    for r in used:
        t0 = time.perf_counter()
        x = cache(r["id"])
        decode_ms.append((time.perf_counter() - t0) * 1e3)
        audio_s += len(x) / sr
    t0 = time.perf_counter()
    long_events = [r for r in used if r["kind"] == "event" and r["duration_s"] > 0.4]
    for r in long_events:
        cache.weighted_energy(r["id"])  # cumulative A-weighted energy: relabels pieces > 0.4 s
    weight_ms_per_file = (time.perf_counter() - t0) * 1e3 / max(1, len(long_events))
    t0 = time.perf_counter()
    backgrounds = [r for r in used if r["kind"] == "background"]
    for r in backgrounds:
        cache.block_energy(r["id"])  # A-weighted block energies: the loudness of any background window
    block_ms_per_background = (time.perf_counter() - t0) * 1e3 / max(1, len(backgrounds))
    t0 = time.perf_counter()
    for r in used:
        r["loudness_db"] = cache.loudness_db(r["id"])  # what ingest stores in the manifest
    loudness_ms_per_file = (time.perf_counter() - t0) * 1e3 / len(used)
    pool = SourcePool.from_manifest(rows, args.split)

    # warm passes: all stages per mixture, once by wall clock and once by this thread's CPU time (the
    # shared dev machine is often oversubscribed: CPU time is then the honest per-core cost)
    passes = {name: timed_pass(pool, cfg, cache, args.seed, args.mixtures, clock) for name, clock in CLOCKS}
    stats = passes["wall"]
    n = args.mixtures
    mean_decode = statistics.fmean(decode_ms)
    result = {
        "machine": {
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "threads": 1,
            "pinned_cpu": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        },
        "corpus": str(args.corpus),
        "mixtures": n,
        "wall": {k: v for k, v in stats.items() if k.startswith(("ms_", "stages"))},
        "cpu": {k: v for k, v in passes["cpu"].items() if k.startswith(("ms_", "stages"))},
        "events_per_mixture": round(stats["n_events"] / n, 2),
        "clip_scaled_fraction": round(stats["clipped"] / n, 3),
        "dropped_events": stats["dropped"],
        "flac_kib_per_mixture": round(stats["flac_bytes"] / n / 1024, 1),
        "cold": {
            "files_decoded": len(decode_ms),
            "audio_s_decoded": round(audio_s, 1),
            "decode_ms_per_file_mean": round(mean_decode, 3),
            "decode_ms_per_file_median": round(statistics.median(decode_ms), 3),
            "decode_ms_per_audio_s": round(sum(decode_ms) / audio_s, 3),
            "sources_per_mixture": round(stats["n_sources"] / n, 2),
            "decode_ms_per_mixture_uncached": round(mean_decode * stats["n_sources"] / n, 3),
            "a_weight_ms_per_file": round(weight_ms_per_file, 3),
            "block_energy_ms_per_background": round(block_ms_per_background, 3),
            "loudness_ms_per_file": round(loudness_ms_per_file, 3),
        },
        "setup": {"ingest_s": round(ingest_s, 2), "cache": cache.stats()},
    }
    print(f"render benchmark: {n} mixtures, 1 thread, {result['machine']['cpu']}, load {load_before[0]:.1f}")
    print(f"{'stage':<14}{'wall ms':>10}{'cpu ms':>10}   (per mixture)")
    for k in STAGES:
        print(
            f"{k:<14}{result['wall']['stages_ms_per_mixture'][k]:>10.3f}{result['cpu']['stages_ms_per_mixture'][k]:>10.3f}"
        )
    print(
        f"{'total':<14}{result['wall']['ms_per_mixture']:>10.3f}{result['cpu']['ms_per_mixture']:>10.3f}"
        f"   (cpu median {result['cpu']['ms_per_mixture_median']}, p90 {result['cpu']['ms_per_mixture_p90']})"
    )
    c = result["cold"]
    print(
        f"cold decode: {c['decode_ms_per_file_mean']:.2f} ms/file mean, {c['decode_ms_per_audio_s']:.2f} ms per "
        f"audio second; uncached ≈ {c['decode_ms_per_mixture_uncached']:.1f} ms/mixture "
        f"({c['sources_per_mixture']} sources)"
    )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
