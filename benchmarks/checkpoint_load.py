"""What the checkpoint integrity checks cost: reading `model.safetensors` with and without the sha256 and
NaN/Inf checks of `model.checkpoint.read_weights`, against plain `safetensors.torch.load_file` with every tensor read once, as loading it into a model does (the
baseline; `load_file` alone only maps the file).

The weights are random float32 tensors totalling --params parameters (default 160 M ≈ HTSAT-base + RoBERTa-base +
projections and heads, the paper's model), written once to a temporary folder; every variant then reads the same
file (page-cached after the first read, as a repeated load is), alternating, best of --repeats.

    uv run python -m benchmarks.checkpoint_load [--params 160e6] [--repeats 3]   # -m: benchmarks/model.py would
                                                                          # shadow the model package
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.checkpoint import file_sha256, read_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", type=float, default=160e6)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n_tensors = 200
    per = int(args.params) // n_tensors
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file({f"t{i:03d}": torch.randn(per) for i in range(n_tensors)}, str(path))
        sha = file_sha256(path)

        def touched(state: dict[str, torch.Tensor]) -> None:
            for v in state.values():  # what load_state_dict's copy into the model does: every byte read
                v.clone()

        variants = {
            "load_file + read every tensor (baseline)": lambda: touched(load_file(str(path))),
            "read_weights, no hash (+ NaN/Inf check)": lambda: touched(read_weights(path)),
            "read_weights with sha256 (the default load)": lambda: touched(read_weights(path, sha256=sha)),
            "sha256 alone": lambda: file_sha256(path),
        }
        best = {k: float("inf") for k in variants}
        for _ in range(args.repeats):
            for k, fn in variants.items():
                t = time.perf_counter()
                fn()
                best[k] = min(best[k], time.perf_counter() - t)
        size_mb = path.stat().st_size / 1e6
    base = best["load_file + read every tensor (baseline)"]
    rows = {k: {"s": round(v, 3), "x_baseline": round(v / base, 2)} for k, v in best.items()}
    out = {"file_mb": round(size_mb, 1), "load_avg": os.getloadavg()[0], "rows": rows}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
