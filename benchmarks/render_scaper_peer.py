"""Peer baseline for issue #2: Scaper 1.6.5 render speed on the same corpus, per 10-s mixture per core.

Run with the separate Scaper venv (benchmarks/peer_setup_scaper.sh), never the workspace one:

    /tmp/scaper-venv/bin/python benchmarks/render_scaper_peer.py [--corpus ../shared/corpus/dev] [-n 100]

Sources: the corpus's metadata.csv with our §4.2 rule (synth.filtering, re-implemented here since this venv
has no synth): background = >= 10 s and "ambiance" as a whole word in tags/description/filename, event =
< 10 s without it. Scaper wants <label>/<file> folders: a temp dir of symlinks grouped by category (files
libsndfile cannot read would be converted once to WAV, untimed; none are on the dev corpus). All splits are
used (ours: the train split). Source files are read once before timing so the page cache is warm; Scaper
still decodes, resamples (libsox via soxbindings) and measures LUFS per event per mixture (no cache).

Per mixture (close to synth.spec.MixtureConfig as Scaper allows): N ~ U{1..10} events; each event's file
drawn like ours (80 % sfx-category files, else general, uniform within), played whole (event_duration =
source duration, source_time 0), onset ~ U(0, 10 - duration); snr ~ U(6, 30) dB; background drawn by
Scaper (label then file uniform), source_time uniform; ref_db -55; 10 ms fades; fix_clipping=True. Not
expressible in Scaper: max 3 concurrent events, split/repeated events, A-weighted loudness (Scaper uses
LUFS), relabelling. No pitch shift / time stretch by default (--pitch-stretch adds them: far slower).
Timed: generate(audio_path=None, disable_sox_warnings=True, no_audio=False) then FLAC PCM_16 level 0 to
memory with soundfile (as synth.flac.encode_flac). Single thread, pinned to one CPU.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import importlib.metadata as md  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scaper  # noqa: E402
import soundfile as sf  # noqa: E402

_WORD_RE = re.compile(r"[a-z0-9]+")
SFX_CATEGORIES = {"sfx", "ui"}  # synth.filtering.SourceTypeConfig.by_category


def words(text: str) -> list[str]:
    return _WORD_RE.findall(str(text).lower())


def has_ambiance(row: dict) -> bool:
    """Whole-word "ambiance" (or "ambiances") in tags, description or filename, like synth.filtering."""
    return any(
        w in ("ambiance", "ambiances")
        for f in ("tags", "description", "filename")
        for w in words(row.get(f, ""))
    )


def kind_of(row: dict) -> str:
    d = float(row["duration_s"])
    amb = has_ambiance(row)
    if d < 10.0 and not amb:
        return "event"
    if d >= 10.0 and amb:
        return "background"
    return "none"


def build_folders(corpus: Path, root: Path) -> dict:
    """fg/<category>/<file> and bg/<category>/<file> symlinks; returns the event pools and counts."""
    pools: dict[str, list[tuple[str, str, float]]] = {"sfx": [], "general": []}
    counts = {"event": 0, "background": 0, "none": 0, "converted": 0, "unreadable": 0}
    with open(corpus / "metadata.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            kind = kind_of(row)
            counts[kind] += 1
            if kind == "none":
                continue
            src = (corpus / row["path"]).resolve()
            label = re.sub(r"[^A-Za-z0-9_-]", "_", row.get("category") or "other")
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", row["id"].replace("/", "__")) + src.suffix
            folder = root / ("bg" if kind == "background" else "fg") / label
            folder.mkdir(parents=True, exist_ok=True)
            dst = folder / name
            try:
                info = sf.info(str(src))
                dst.symlink_to(src)
            except (RuntimeError, sf.LibsndfileError):
                # convert once (untimed) to WAV at native rate via the sox CLI
                dst = dst.with_suffix(".wav")
                if os.system(f"sox -q '{src}' '{dst}'") != 0:
                    counts["unreadable"] += 1
                    continue
                counts["converted"] += 1
                info = sf.info(str(dst))
            src.read_bytes()  # warm the page cache
            if kind == "event":
                pool = "sfx" if label in SFX_CATEGORIES else "general"
                pools[pool].append((label, str(dst), info.duration))
    return {"pools": pools, "counts": counts}


def add_events(sc: scaper.Scaper, rng: np.random.Generator, pools: dict, pitch_stretch: bool) -> int:
    n = int(rng.integers(1, 11))  # N ~ U{1..10}
    for _ in range(n):
        pool = (
            pools["sfx"]
            if (rng.random() < 0.8 and pools["sfx"]) or not pools["general"]
            else pools["general"]
        )
        label, path, dur = pool[int(rng.integers(len(pool)))]
        latest = max(0.0, 10.0 - dur)
        sc.add_event(
            label=("const", label),
            source_file=("const", path),
            source_time=("const", 0.0),
            event_time=("uniform", 0.0, latest) if latest > 1e-3 else ("const", 0.0),
            event_duration=("const", dur),
            snr=("uniform", 6.0, 30.0),
            pitch_shift=("uniform", -3.0, 3.0) if pitch_stretch else None,
            time_stretch=("uniform", 0.8, 1.2) if pitch_stretch else None,
        )
    return n


def cpu_s() -> tuple[float, float, float]:
    """(this thread, this process, waited-for children) CPU seconds."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.thread_time(), time.process_time(), ch.ru_utime + ch.ru_stime


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared/corpus/dev")
    ap.add_argument("-n", "--mixtures", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pitch-stretch", action="store_true", help="add pitch U(-3,3) st, stretch U(0.8,1.2)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    load_before = os.getloadavg()
    warnings.simplefilter("ignore")

    with tempfile.TemporaryDirectory(prefix="scaper-peer-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        built = build_folders(args.corpus, root)
        setup_s = time.perf_counter() - t0
        pools = built["pools"]
        sc = scaper.Scaper(10.0, str(root / "fg"), str(root / "bg"), random_state=args.seed)
        sc.sr, sc.ref_db, sc.n_channels = 48000, -55, 1
        sc.fade_in_len = sc.fade_out_len = 0.01
        n_bg = sum(len(list((root / "bg" / lab).iterdir())) for lab in sc.bg_labels)

        gen = {"wall": [], "thread": [], "process": [], "children": []}
        flac = {"wall": [], "thread": [], "process": []}
        n_events, flac_bytes, clipped = 0, 0, 0
        for i in range(args.mixtures):
            rng = np.random.default_rng([args.seed, i])
            sc.reset_bg_event_spec()
            sc.reset_fg_event_spec()
            sc.add_background(
                label=("choose", []), source_file=("choose", []), source_time=("uniform", 0, 1e6)
            )
            n_events += add_events(sc, rng, pools, args.pitch_stretch)
            w0, (t0_, p0, c0) = time.perf_counter(), cpu_s()
            audio, _jam, _ann, _ev = sc.generate(
                audio_path=None,
                jams_path=None,
                fix_clipping=True,
                disable_sox_warnings=True,
                no_audio=False,
                disable_instantiation_warnings=True,
            )
            w1, (t1, p1, c1) = time.perf_counter(), cpu_s()
            buf = io.BytesIO()
            sf.write(buf, audio[:, 0], 48000, format="FLAC", subtype="PCM_16", compression_level=0.0)
            w2, (t2, p2, _c2) = time.perf_counter(), cpu_s()
            clipped += float(np.max(np.abs(audio))) >= 1.0 - 1e-6
            flac_bytes += len(buf.getvalue())
            for d, k, a, b in ((gen, "wall", w0, w1), (gen, "thread", t0_, t1), (gen, "process", p0, p1)):
                d[k].append((b - a) * 1e3)
            gen["children"].append((c1 - c0) * 1e3)
            for k, a, b in (("wall", w1, w2), ("thread", t1, t2), ("process", p1, p2)):
                flac[k].append((b - a) * 1e3)

    n = args.mixtures

    def mean(x: list[float]) -> float:
        return round(statistics.fmean(x), 3)

    total = {
        k: mean(
            [
                a + b + (c if k == "process" else 0)
                for a, b, c in zip(gen[k], flac[k], gen["children"], strict=True)
            ]
        )
        for k in ("wall", "thread", "process")
    }
    versions = {}
    for p in ("scaper", "numpy", "scipy", "soundfile", "soxbindings", "jams", "pyloudnorm"):
        try:
            versions[p] = md.version(p)
        except md.PackageNotFoundError:
            versions[p] = None
    versions["libsndfile"] = sf.__libsndfile_version__
    versions["python"] = platform.python_version()
    result = {
        "peer": "scaper",
        "machine": {
            "threads": 1,
            "pinned_cpu": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        },
        "versions": versions,
        "corpus": str(args.corpus),
        "mixtures": n,
        "pitch_stretch": args.pitch_stretch,
        "sources": {
            **built["counts"],
            "fg_sfx": len(pools["sfx"]),
            "fg_general": len(pools["general"]),
            "bg_files": n_bg,
            "fg_labels": len(sc.fg_labels),
            "bg_labels": len(sc.bg_labels),
        },
        "setup_s": round(setup_s, 2),
        "events_per_mixture": round(n_events / n, 2),
        "clip_fixed_fraction_approx": round(clipped / n, 3),
        "flac_kib_per_mixture": round(flac_bytes / n / 1024, 1),
        "ms_per_mixture": {
            "generate": {k: mean(v) for k, v in gen.items()},
            "generate_thread_median": round(statistics.median(gen["thread"]), 3),
            "flac": {k: mean(v) for k, v in flac.items()},
            "total": total,  # process = generate + flac process CPU + children CPU
        },
    }
    g, f = result["ms_per_mixture"]["generate"], result["ms_per_mixture"]["flac"]
    print(
        f"scaper peer: {n} mixtures, 1 thread, load {load_before[0]:.1f}, {result['events_per_mixture']} events"
    )
    print(f"{'stage':<10}{'wall':>10}{'thread':>10}{'process':>10}{'children':>10}   (ms per mixture)")
    print(
        f"{'generate':<10}{g['wall']:>10.3f}{g['thread']:>10.3f}{g['process']:>10.3f}{g['children']:>10.3f}"
    )
    print(f"{'flac':<10}{f['wall']:>10.3f}{f['thread']:>10.3f}{f['process']:>10.3f}")
    print(f"{'total':<10}{total['wall']:>10.3f}{total['thread']:>10.3f}{total['process']:>10.3f}")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
