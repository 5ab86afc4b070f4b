"""Throughput of the caption client against the local scripted server (captioning.testing.fake_server).

    uv run --no-sync python benchmarks/caption_client.py                       # default grid
    uv run --no-sync python benchmarks/caption_client.py --files 400 --concurrency 1 8 32 --latency-s 0 0.05

The server runs in its own process (so it does not share the client's GIL). For each (latency, concurrency):
requests/s through CaptionClient alone, then files/s through LLMCaptioner with the JSONL cache (fsync per
entry) and the validation path, then a re-run served from the cache. Overhead per file = wall time minus
the ideal time files·latency/concurrency, divided by files.

    uv run --no-sync python benchmarks/caption_client.py --ingest-corpus ../shared/corpus/dev --ingest-files 100

With --ingest-corpus the script instead times caption.py's ingest check per file (`synth.ingest.try_probe_row`
with the renderer's settings: whole decode + 48 kHz resample + loudness) against the header + first/last
4096 frames probe it replaced, on the first N files of the corpus.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time

from captioning.cache import CaptionCache
from captioning.captioner import LLMCaptioner
from captioning.client import CaptionClient, ClientConfig
from captioning.prompt import CaptionInput


def start_server(latency_s: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "captioning.testing.fake_server", "--latency-s", str(latency_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError("fake server did not start")
    return proc, url


def inputs(n: int, tag: str) -> list[CaptionInput]:
    return [
        CaptionInput(f"{tag}_{i:05d}.wav", ("dog", "bark", "outdoor"), f"a dog barking {i}", "bench")
        for i in range(n)
    ]


async def run_client(cfg: ClientConfig, inps: list[CaptionInput]) -> tuple[float, CaptionClient]:
    client = CaptionClient(cfg, api_key="bench")
    t = time.perf_counter()
    outs = await client.caption_many(inps)
    dt = time.perf_counter() - t
    await client.aclose()
    assert all(o.captions for o in outs), "benchmark answers must be valid"
    return dt, client


async def run_captioner(cfg: ClientConfig, inps: list[CaptionInput], cache_dir: str) -> tuple[float, dict]:
    cap = LLMCaptioner(cfg, cache=CaptionCache(cache_dir), api_key="bench")
    t = time.perf_counter()
    await cap.caption_inputs(inps)
    dt = time.perf_counter() - t
    cap.cache.close()
    await cap.aclose()
    return dt, dict(cap.all_counts())


def time_ingest(corpus: str, n: int) -> None:
    """Seconds per file of the two ingest checks on the first n metadata rows of `corpus`."""
    import csv
    import os

    from synth.ingest import IngestConfig, try_probe_row

    with open(os.path.join(corpus, "metadata.csv"), newline="") as fh:
        rows = [r for _, r in zip(range(n), csv.DictReader(fh), strict=False)]
    audio_s = sum(float(r.get("duration_s") or 0) for r in rows)
    for name, cfg in (("header+head/tail", IngestConfig()), ("whole decode (caption.py)", IngestConfig(measure_loudness=True))):  # fmt: skip
        t = time.perf_counter()
        skipped = sum(try_probe_row(r, corpus, cfg)[0] is None for r in rows)
        dt = time.perf_counter() - t
        print(f"{name:<28} {len(rows)} files ({audio_s:.0f} s of audio): {dt:.2f} s, "
              f"{1000 * dt / len(rows):.1f} ms/file, skipped {skipped}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--latency-s", type=float, nargs="+", default=[0.0, 0.05])
    ap.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    ap.add_argument("--ingest-corpus", help="time the ingest check on this corpus instead of the client")
    ap.add_argument("--ingest-files", type=int, default=100)
    args = ap.parse_args()
    if args.ingest_corpus:
        time_ingest(args.ingest_corpus, args.ingest_files)
        return
    rows = []
    for lat in args.latency_s:
        proc, url = start_server(lat)
        try:
            for c in args.concurrency:
                cfg = ClientConfig(endpoint=url, model="bench", max_concurrency=c, timeout_s=30)
                ideal = args.files * lat / c
                dt, client = asyncio.run(run_client(cfg, inputs(args.files, f"c{c}l{lat}")))
                with tempfile.TemporaryDirectory() as tmp:
                    inps = inputs(args.files, f"k{c}l{lat}")
                    dt2, counts = asyncio.run(run_captioner(cfg, inps, tmp))
                    dt3, counts3 = asyncio.run(run_captioner(cfg, inps, tmp))
                assert counts3.get("files_cache") == args.files and not counts3.get("requests_sent")
                rows.append({
                    "latency_s": lat,
                    "concurrency": c,
                    "files": args.files,
                    "client_req_per_s": round(args.files / dt, 1),
                    "client_overhead_ms_per_file": round(1000 * (dt - ideal) / args.files, 2),
                    "max_in_flight": client.max_in_flight,
                    "captioner_files_per_s": round(args.files / dt2, 1),
                    "captioner_overhead_ms_per_file": round(1000 * (dt2 - ideal) / args.files, 2),
                    "cached_files_per_s": round(args.files / dt3, 1),
                })  # fmt: skip
        finally:
            proc.kill()
            proc.wait()
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    head = list(rows[0])
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(r[h]) for h in head))


if __name__ == "__main__":
    main()
