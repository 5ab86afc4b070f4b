"""Render FLAM training mixtures (+ audio-text clips) into deterministic WebDataset shards with Apache Beam.

    uv run python pipelines/render_mixtures.py                      # demo corpus -> ./data (local, offline)
    uv run python pipelines/render_mixtures.py --manifest manifest.parquet --out gs://b/flam \\
        --num-mixtures 1000000 --shard-size 256 --runner DataflowRunner --project P --region R \\
        --temp_location gs://b/tmp

Flags not listed below are Apache Beam pipeline options and are passed through (--runner,
--direct_num_workers, --direct_running_mode, --project, ...). See docs/render_mixtures.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from synth.beam_support import parse_cli, setup_logging
from synth.render_job import RenderOptions, RenderStopped, run_render
from synth.shards import ShardConfigError
from synth.spec import MixtureConfig
from synth.split import parse_heldout

DEMO_CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "demo"


def _heldout(text: str) -> float | int:
    try:
        return parse_heldout(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: Sequence[str] | None = None) -> tuple[RenderOptions, list[str]]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Any other --flag is an Apache Beam pipeline option (e.g. --runner, --direct_num_workers).",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--corpus",
        help=f"corpus folder with metadata.csv + audio: ingest + filter + fallback captions "
        f"(default when --manifest is not given: {DEMO_CORPUS})",
    )
    src.add_argument(
        "--manifest", help="Parquet manifest (e.g. from pipelines/caption.py); local path or URI"
    )
    p.add_argument(
        "--out", default="data", help="output root: OUT/mixtures/<split>/, OUT/audio_text/<split>/"
    )
    p.add_argument("--num-mixtures", type=int, default=256, help="mixtures to render (default 256)")
    p.add_argument("--split", choices=("train", "heldout"), default="train", help="source split to mix")
    p.add_argument("--seed", type=int, default=0, help="base seed: mixture i uses default_rng([seed, i])")
    p.add_argument("--shard-size", type=int, default=128, help="mixtures per shard (default 128)")
    p.add_argument("--audio-text-shard-size", type=int, default=None, help="clips per audio-text shard")
    p.add_argument("--no-audio-text", action="store_true", help="skip the audio-text shards")
    p.add_argument(
        "--no-measure-loudness",
        action="store_true",
        help="with --corpus: do not decode every file at ingest to store loudness (workers measure it)",
    )
    p.add_argument("--ingest-workers", type=int, default=1, help="with --corpus: processes probing files")
    p.add_argument(
        "--allow-outside-corpus",
        action="store_true",
        help="with --corpus: accept metadata paths outside the corpus folder (else skipped, counted)",
    )
    p.add_argument(
        "--no-verify-shards",
        action="store_true",
        help="on resume, trust a complete shard's size and sidecar without re-reading its sha256",
    )
    p.add_argument(
        "--heldout-events",
        type=_heldout,
        default=None,
        help="with --corpus: events held out, a count (10000, as §5.1) or a fraction (default 0.1)",
    )
    p.add_argument(
        "--heldout-backgrounds",
        type=_heldout,
        default=None,
        help="with --corpus: backgrounds held out, a count (5000, as §5.1) or a fraction (default 0.1)",
    )
    p.add_argument("--log-level", default="INFO")
    args, beam_args = parse_cli(p, argv)
    setup_logging(args.log_level)
    corpus = args.corpus
    if corpus is None and args.manifest is None:
        corpus = str(DEMO_CORPUS)
    try:
        opts = RenderOptions(
            out=args.out,
            corpus=corpus,
            manifest=args.manifest,
            num_mixtures=args.num_mixtures,
            split=args.split,
            seed=args.seed,
            shard_size=args.shard_size,
            audio_text=not args.no_audio_text,
            audio_text_shard_size=args.audio_text_shard_size,
            measure_loudness=not args.no_measure_loudness,
            ingest_workers=args.ingest_workers,
            heldout_events=args.heldout_events,
            heldout_backgrounds=args.heldout_backgrounds,
            allow_outside_corpus=args.allow_outside_corpus,
            verify_shards=not args.no_verify_shards,
            mixture=MixtureConfig(),
        )
    except ValueError as e:
        p.error(str(e))
    return opts, beam_args


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 done; 2 bad input (arguments, --out, manifest, metadata, a folder made with other
    settings), before any rendering; 3 stopped midway by an I/O error (disk full, ...): re-run to resume."""
    opts, beam_args = parse_args(argv)
    try:
        summary = run_render(opts, beam_args)
    except (ShardConfigError, ValueError) as e:  # bad input: --out, folder/config mismatch, manifest, pool
        logging.getLogger("render_mixtures").error("%s", e)
        return 2
    except RenderStopped as e:
        logging.getLogger("render_mixtures").error("%s", e)
        return 3
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
