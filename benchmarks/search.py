"""`model.search query` speed on a synthetic index of many files (the real on-disk format, plain numpy).

Writes an index of `--files` files of `--minutes` each (3.2 frames/s, D = 512 float32 rows, 64-MB segments
through `model.search.index.write_segment` / `write_manifest`) with random unit frame embeddings (one random
block, its columns' signs flipped per segment: only the scan cost matters here), then times
`model.search.query.search` — the function the CLI calls — for one random unit text embedding:

- `scan`: threshold 0.999, which no frame reaches: the exact pass over all frames (matrix product, Eq. 8,
  per-file maxima) and nothing else;
- `hits`: threshold 0.98, which only the 1 % of files with a run of frames leaning towards the text reach
  (a selective query, as real queries are): those files are median-filtered, the best segmented;
- `dense`: threshold 0.5 (α = 10): about half of all frames reach it, every file holds hits (worst case).

Each is timed `--repeat` times after one untimed pass (page cache warm: the index is read from memory);
the first pass is reported as `first`. Also the model-free start of a query (manifest + memory maps).

    .venv/bin/python benchmarks/search.py --files 10000 --minutes 3 --index /tmp/search-bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: benchmarks/model.py would shadow the `model` package

import numpy as np

from model.search.index import FileEntry, Manifest, open_index, write_manifest, write_segment
from model.search.query import search

D = 512
HOP_S = 0.3125
SEG_ROWS = (64 << 20) // (4 * D)


def build(index: Path, n_files: int, minutes: float, target: np.ndarray, seed: int = 0) -> int:
    """Random unit frames; in 1 % of the files a run of 8 frames leans towards `target` (similarity ≈ 0.5)."""
    rng = np.random.default_rng(seed)
    frames_per_file = int(np.ceil(minutes * 60 / HOP_S))
    block = rng.standard_normal((SEG_ROWS, D), dtype=np.float32)
    block /= np.linalg.norm(block, axis=1, keepdims=True)
    m = Manifest(root="/synthetic", checkpoint="/synthetic/ckpt", checkpoint_sha256="0" * 64, checkpoint_files=[],
                 frame_hop_s=HOP_S, hop_frames=16, dim=D)  # fmt: skip
    seg, row, rows = 1, 0, 0
    per_seg = SEG_ROWS // frames_per_file
    for i in range(n_files):
        if row + frames_per_file > per_seg * frames_per_file:
            seg, row = seg + 1, 0
        m.files[f"dir{i // 1000:02d}/file{i:05d}.flac"] = FileEntry(
            1, 1, seg, row, frames_per_file, minutes * 60
        )
        row += frames_per_file
        rows += frames_per_file
    for s in range(1, seg + 1):
        n = sum(e.n_frames for e in m.files.values() if e.segment == s)
        signs = rng.choice(np.array([-1, 1], np.float32), D)
        rows_s = block[:n] * signs
        for e in (e for e in m.files.values() if e.segment == s):
            if rng.random() < 0.01:
                a = e.row + int(rng.integers(0, e.n_frames - 8))
                rows_s[a : a + 8] = 0.5 * target + 0.866 * rows_s[a : a + 8]
                rows_s[a : a + 8] /= np.linalg.norm(rows_s[a : a + 8], axis=1, keepdims=True)
        write_segment(index, s, rows_s)
    m.next_segment = seg + 1
    write_manifest(index, m)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--index", default="/tmp/search-bench-index")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the index folder")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    index = Path(a.index)
    if index.exists():
        shutil.rmtree(index)
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "load_before": os.getloadavg()}
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((1, D)).astype(np.float32)
    emb /= np.linalg.norm(emb)
    t = time.perf_counter()
    rows = build(index, a.files, a.minutes, emb[0])
    res.update(files=a.files, minutes=a.minutes, frames=rows, index_gb=rows * D * 4 / 1e9, build_s=time.perf_counter() - t)  # fmt: skip
    print(json.dumps(res), flush=True)
    t = time.perf_counter()
    view = open_index(index)
    res["open_s"] = time.perf_counter() - t
    alpha, beta = np.array([10.0], np.float32), np.array([-8.0], np.float32)
    # approximate method: p = σ(10·s); random frames reach s ≈ 0.25 at most (p ≈ 0.92), leaning ones s ≈ 0.5
    cases = {"scan": 0.999, "hits": 0.98, "dense": 0.5}
    for name, thr in cases.items():
        times, n_hits = [], 0
        for _ in range(a.repeat + 1):
            t = time.perf_counter()
            hits = search(view, emb, alpha, beta, threshold=thr, top=10)[0]
            times.append(time.perf_counter() - t)
            n_hits = len(hits)
        res[name] = {"threshold": thr, "first_s": times[0], "median_s": float(np.median(times[1:])),
                     "min_s": float(np.min(times[1:])), "hits": n_hits}  # fmt: skip
        print(name, json.dumps(res[name]), flush=True)
    res["load_after"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    if not a.keep:
        shutil.rmtree(index)


if __name__ == "__main__":
    main()
