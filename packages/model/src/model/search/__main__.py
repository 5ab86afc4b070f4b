"""python -m model.search index DIR --checkpoint CKPT --index PATH
python -m model.search query "glass breaking" --index PATH [--top 10]

`index` stores the frame embeddings of every audio file under DIR in an on-disk index and, run again, brings it
up to date (added, changed and removed files; a changed checkpoint rebuilds it). `query` prints the best hits,
one per line: `path<TAB>start_s<TAB>end_s<TAB>score`, scored exactly as `frame_probabilities` would.
Exit status: 0 done, 1 index done but some files skipped (undecodable; listed on stderr), 2 bad arguments /
checkpoint / index, 130 interrupted (run `index` again to finish; the index stays usable).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("model.search")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model.search", description="Search recordings for described sounds."
    )
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("index", help="build or update the index of a folder")
    i.add_argument("dir", metavar="DIR", help="folder of audio files (walked recursively)")
    i.add_argument("--checkpoint", required=True, help="FLAM checkpoint folder")
    i.add_argument("--index", required=True, help="index folder (created)")
    i.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    i.add_argument("--batch-size", type=int, default=16, help="10-s windows per forward (default 16)")
    i.add_argument(
        "--decode-workers", type=int, default=2, help="decoding threads ahead of the model (default 2)"
    )
    i.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    q = sub.add_parser("query", help="rank the indexed audio for a text")
    q.add_argument("text", metavar="TEXT", help="the sound to look for, in free text")
    q.add_argument("--index", required=True, help="index folder")
    q.add_argument("--top", type=int, default=10, help="hits to print (default 10; 0 = all)")
    q.add_argument(
        "--threshold", type=float, default=0.5, help="frame probability a hit's frames reach (default 0.5)"
    )
    q.add_argument("--method", choices=("approximate", "unbiased"), default="approximate", help="Eq. 8 form")
    q.add_argument(
        "--median-filter", type=int, default=3, help="median over this many frames, odd; 1 = none (default 3)"
    )
    q.add_argument(
        "--checkpoint",
        default=None,
        help="where the index's checkpoint is now (default: the path it was built with; its bytes must match)",
    )
    q.add_argument("--device", default="cpu", help="device of the text encoder (default cpu)")
    return p.parse_args(argv)  # fmt: skip


def _index(a: argparse.Namespace) -> int:
    from model.detect.load import load_model
    from model.search.build import update_index

    if a.batch_size < 1 or a.decode_workers < 0:
        raise ValueError("--batch-size must be ≥ 1 and --decode-workers ≥ 0")
    if not Path(a.dir).is_dir():
        raise ValueError(f"{a.dir}: not a folder")
    model = load_model(a.checkpoint, a.device, a.batch_size, bf16=False)
    try:
        rep = update_index(a.index, a.dir, model, a.checkpoint, decode_workers=a.decode_workers,
                           progress=False if a.quiet else None)  # fmt: skip
    except KeyboardInterrupt:
        print(f"interrupted: {a.index} holds every file finished so far; run the same command again to finish",
              file=sys.stderr)  # fmt: skip
        return 130
    if rep.rebuilt:
        print(f"note: {rep.rebuilt}", file=sys.stderr)
    print(rep.line())
    for s in rep.skipped:
        print(f"skipped: {s['filename']}: {s['reason']}", file=sys.stderr)
    return 1 if rep.skipped else 0


def _query(a: argparse.Namespace) -> int:
    import torch

    from model import FLAM
    from model.detect.files import checkpoint_sha256, checkpoint_stat
    from model.inference import text_embeddings
    from model.search.index import open_index
    from model.search.query import search

    if not 0.0 <= a.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {a.threshold}")
    if a.median_filter < 1 or a.median_filter % 2 == 0:
        raise ValueError(f"--median-filter must be an odd number ≥ 1, got {a.median_filter}")
    if a.top < 0:
        raise ValueError(f"--top must be ≥ 0, got {a.top}")
    view = open_index(a.index)
    m = view.manifest
    ckpt = a.checkpoint or m.checkpoint
    if not Path(ckpt).is_dir():
        raise ValueError(
            f"the index's checkpoint {ckpt} is not there; pass --checkpoint with where it is now"
        )
    if checkpoint_stat(ckpt) != m.checkpoint_files and checkpoint_sha256(ckpt) != m.checkpoint_sha256:
        raise ValueError(f"checkpoint {ckpt} is not the one {a.index} was built with (sha256 differs); "
                         f"run `python -m model.search index {m.root} --checkpoint {ckpt} --index {a.index}` (it rebuilds)")  # fmt: skip
    t0 = time.perf_counter()
    model = FLAM.from_pretrained(ckpt).to(torch.device(a.device)).eval()
    t1 = time.perf_counter()
    emb, alpha, beta = (x.float().cpu().numpy() for x in text_embeddings(model, [a.text]))
    t2 = time.perf_counter()
    hits = search(view, emb, alpha, beta, method=a.method, median_filter=a.median_filter, threshold=a.threshold,
                  top=a.top)[0]  # fmt: skip
    t3 = time.perf_counter()
    for h in hits:
        print(f"{h.path}\t{h.start_s:.4f}\t{h.end_s:.4f}\t{h.score:.6f}")
    n_frames = sum(e.n_frames for e in m.files.values())
    print(f"{len(hits)} hits from {len(m.files)} files ({n_frames} frames); search {1000 * (t3 - t2):.0f} ms, "
          f"text {1000 * (t2 - t1):.0f} ms, model load {t1 - t0:.1f} s", file=sys.stderr)  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(a, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        return _index(a) if a.command == "index" else _query(a)
    except (ValueError, OSError) as e:  # SearchIndexError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
