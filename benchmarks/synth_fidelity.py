"""Synthesis fidelity on a real corpus (issue 9): realised mode shares, event levels against the background
window actually used, label extent by SNR, and the render summary counts.

Renders mixtures with ``pipelines/render_mixtures.py``'s driver (``synth.render_job.run_render``), then
re-renders from the stored specs, independently of the renderer's own bookkeeping: for every single-piece
event, its track (source piece x the spec's gain, 10-ms fades) and the background window (x the spec's gain)
are rebuilt from the decoded sources and measured with one scale-invariant loudness
(``synth.loudness.measure_loudness_db``); the deviation is ``|(event - background) - snr_db|``.

    uv run --no-sync python benchmarks/synth_fidelity.py --corpus ../shared/corpus/dev -n 1000 --out /tmp/fid
    # render only / measure only (e.g. shards rendered by another version of synth):
    uv run --no-sync python benchmarks/synth_fidelity.py --out /tmp/fid --measure-only --json fid.json

Reads raw sample JSON (any spec version), so shards of older synth versions can be measured too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

SR = 48000
N = 10 * SR
HOP = 1200


def render(corpus: Path, out: Path, n: int, seed: int) -> str:
    from synth.render_job import RenderOptions, run_render

    opts = RenderOptions(out=str(out), corpus=str(corpus), num_mixtures=n, seed=seed, audio_text=False)
    summary = run_render(opts, ["--runner=FnApiRunner", "--direct_num_workers=1"])
    return summary.format()


def read_records(split_dir: Path) -> list[dict]:
    recs = []
    for tar in sorted(split_dir.glob("shard-*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    recs.append(json.loads(t.extractfile(m).read()))
    return sorted(recs, key=lambda r: r["key"])


def _frames(a: float, b: float) -> set[int]:
    """Grid frames whose [i*hop, (i+1)*hop) interval overlaps [a, b) seconds."""
    return set(range(int(a * SR) // HOP, -(-int(round(b * SR)) // HOP)))


def measure(out: Path, split: str = "train") -> dict:
    from synth.audio import load_audio
    from synth.loudness import measure_loudness_db
    from synth.manifest import read_manifest
    from synth.render import build_event_track

    paths = {r["id"]: r["path"] for r in read_manifest(out / "manifest.parquet").to_pylist()}
    recs = read_records(out / "mixtures" / split)
    cache: dict[str, np.ndarray] = {}

    def src(i: str) -> np.ndarray:
        if i not in cache:
            cache[i] = load_audio(paths[i])
        return cache[i]

    modes, notes, dev, inside, extent = Counter(), Counter(), [], 0, {"<12": [], "12-24": [], ">24": []}
    for rec in recs:
        spec = rec["spec"]
        notes.update(spec.get("notes", {}))
        modes.update(e["mode"] for e in spec["events"])
        bg = spec["background"]
        if bg is None or bg.get("gain_db") is None:
            continue
        o = int(round(bg["offset"] * SR))
        window = src(bg["id"])[o : o + N].astype(np.float64) * 10 ** (bg["gain_db"] / 20)
        l_bg = measure_loudness_db(window, SR)
        captions = Counter(e["caption"] for e in spec["events"])
        labels = {e["text"]: e["segments"] for e in rec["events"]}
        for e in spec["events"]:
            if e["mode"] != "single" or e.get("gain_db") is None:
                continue
            pieces = [tuple(int(round(v * SR)) for v in p) for p in e["pieces"]]
            _, track, _ = build_event_track(src(e["id"]), pieces, 10 ** (e["gain_db"] / 20), int(0.01 * SR))
            diff = measure_loudness_db(track, SR) - l_bg
            if np.isfinite(diff):
                dev.append(abs(diff - e["snr_db"]))
                inside += 4.5 <= diff <= 31.5
            if captions[e["caption"]] == 1:  # label extent: frames labelled / frames the event occupies
                _, d, ln = e["pieces"][0]
                placed = _frames(d, d + ln)
                lab = set().union(*(_frames(a, b) for a, b in labels.get(e["caption"], [])))
                snr = e["snr_db"]
                key = "<12" if snr < 12 else (">24" if snr > 24 else "12-24")
                extent[key].append(len(placed & lab) / len(placed))
    total = sum(modes.values())
    d = np.array(dev)
    return {
        "mixtures": len(recs),
        "events_placed": total,
        "mode_shares": {m: round(modes[m] / total, 4) for m in ("split", "repeat", "single")},
        "notes": dict(sorted(notes.items())),
        "level_deviation_db": {
            "single_events_measured": len(d),
            "median": round(float(np.median(d)), 3),
            "p90": round(float(np.percentile(d, 90)), 3),
            "max": round(float(d.max()), 3),
            "share_within_4.5_31.5_db": round(inside / len(d), 4),
        },
        "label_extent_median_by_snr": {
            k: {"events": len(v), "median_share_labelled": round(statistics.median(v), 3) if v else None}
            for k, v in extent.items()
        },
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared/corpus/dev")
    ap.add_argument("--out", type=Path, required=True, help="render_mixtures output folder (created)")
    ap.add_argument("-n", "--mixtures", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--measure-only", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    result: dict = {"load_before": round(os.getloadavg()[0], 2)}
    if not args.measure_only:
        t0 = time.perf_counter()
        result["summary"] = render(args.corpus, args.out, args.mixtures, args.seed)
        result["render_s"] = round(time.perf_counter() - t0, 1)
        print(result["summary"])
    if not args.render_only:
        result.update(measure(args.out))
        print(json.dumps({k: v for k, v in result.items() if k != "summary"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
