"""python -m model.detect FILE_OR_DIR … --query "dog barking" [--query …] --checkpoint CKPT [--method …]
[--threshold 0.5] [--out DIR]

Frame probabilities of every query in every audio file (folders walked recursively; any format libsndfile reads,
any length, rate and channel count), detected segments, and per file a figure, a DCASE TSV and a JSON record.
Exit status: 0 every file done, 1 done but some files skipped (undecodable; listed on stderr and in
summary.json), 2 bad arguments / checkpoint / no audio found, 130 interrupted (run it again to resume).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from model.text_slots import normalize_text

log = logging.getLogger("model.detect")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model.detect", description=__doc__.split("\n\n")[1].replace("\n", " ")
    )
    p.add_argument(
        "inputs", nargs="+", metavar="FILE_OR_DIR", help="audio files and/or folders (walked recursively)"
    )
    p.add_argument(
        "--query", action="append", required=True, help="a sound to look for, in free text (repeatable)"
    )
    p.add_argument(
        "--checkpoint", required=True, help="FLAM checkpoint folder (FLAM.save_pretrained / model.train)"
    )
    p.add_argument(
        "--method",
        choices=("approximate", "unbiased"),
        default="approximate",
        help="Eq. 8 form (default approximate)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="probability at which a frame counts as detected (default 0.5)",
    )
    p.add_argument("--out", default="detections", help="output folder (default ./detections)")
    p.add_argument(
        "--median-filter",
        type=int,
        default=3,
        help="median over this many frames, odd; 1 = none (default 3, App. C.7)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    p.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast on CUDA (faster; probabilities differ ~1e-3)"
    )
    p.add_argument("--batch-size", type=int, default=16, help="10-s windows per forward (default 16)")
    p.add_argument(
        "--decode-workers", type=int, default=2, help="decoding threads ahead of the model (default 2)"
    )
    p.add_argument(
        "--plot-workers",
        type=int,
        default=1,
        help="figure workers: 1 = a thread beside the model (default), N > 1 = N processes",
    )
    p.add_argument("--no-plot", action="store_true", help="write no <name>.png")
    p.add_argument(
        "--force", action="store_true", help="process every file again, even when its outputs are up to date"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    return p.parse_args(argv)  # fmt: skip


def check_queries(queries: list[str]) -> list[str]:
    """Queries as given (stripped); ValueError for an empty one, a tab/newline (TSV), or a duplicate after
    text normalisation (the model sees "Dog!" and "dog" as the same text)."""
    out, seen = [], {}
    for q in queries:
        q = q.strip()
        if any(c in q for c in "\t\r\n"):
            raise ValueError(f"--query {q!r}: tabs and line breaks cannot go into a TSV label")
        n = normalize_text(q)
        if not n:
            raise ValueError(f"--query {q!r} is empty after text normalisation")
        if n in seen:
            raise ValueError(f"--query {q!r} and {seen[n]!r} are the same text after normalisation")
        seen[n] = q
        out.append(q)
    return out


def check_args(a: argparse.Namespace) -> None:
    if not 0.0 <= a.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {a.threshold}")
    if a.median_filter < 1 or a.median_filter % 2 == 0:
        raise ValueError(f"--median-filter must be an odd number ≥ 1, got {a.median_filter}")
    for name in ("batch_size", "plot_workers"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(a, name)}")
    if a.decode_workers < 0:
        raise ValueError(f"--decode-workers must be ≥ 0, got {a.decode_workers}")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if a.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from model.detect.files import find_audio_files
    from model.detect.load import load_model
    from model.detect.run import RESERVED, DetectOptions, Detector

    try:
        check_args(a)
        queries = check_queries(a.query)
        items = find_audio_files(a.inputs, reserved=RESERVED)
        if not items:
            raise ValueError(f"no audio files in {' '.join(a.inputs)}")
        model = load_model(a.checkpoint, a.device, a.batch_size, a.bf16)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    opts = DetectOptions(
        queries=tuple(queries), method=a.method, threshold=a.threshold, median_filter=a.median_filter,
        plot=not a.no_plot, plot_workers=a.plot_workers, decode_workers=a.decode_workers, force=a.force,
    )  # fmt: skip
    out = Path(a.out)
    det = Detector(model, out, opts, str(Path(a.checkpoint).resolve()), progress=False if a.quiet else None)
    try:
        s = det.run(items)
    except KeyboardInterrupt:
        print(
            f"interrupted: finished files are in {out}; run the same command again to do the rest",
            file=sys.stderr,
        )
        return 130
    d = s.to_dict()
    rate = f"{d['hours_per_minute']:.3f} h/min" if d["hours_per_minute"] else "-"
    print(f"{s.files} files: {s.processed} processed, {s.already_done} already done, {len(s.skipped)} skipped; "
          f"{d['audio_hours']:.3f} h of audio in {s.wall_s:.1f} s ({rate}); outputs in {out}")  # fmt: skip
    for sk in s.skipped:
        print(f"skipped: {sk['filename']}: {sk['reason']}", file=sys.stderr)
    return 1 if s.skipped else 0


if __name__ == "__main__":
    raise SystemExit(main())
