"""`python -m model.train --config configs/train/NAME.yaml [--out DIR] [--init CKPT] [--steps N] [--resume]
[--mixtures DIR …] [--online MANIFEST …] [--audio-text DIR …] [key=value …]`, and the same under `torchrun … -m model.train`.

Exit codes: 0 done (or stopped by SIGTERM/SIGINT with a checkpoint), 1 training aborted, 2 bad arguments,
configuration or data sources (one line on stderr naming the problem).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from model.train.config import SourceConfig, load

_OVERRIDE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model.train", description="Train FLAM / FLAM-Global (App. C.5, C.6)."
    )
    p.add_argument("--config", required=True, help="YAML config (configs/train/*.yaml)")
    p.add_argument(
        "--out", default="runs/flam", help="output folder: checkpoints/, final/, metrics.jsonl, tb/"
    )
    p.add_argument("--init", default=None, help="FLAM checkpoint folder, OpenFLAM .pth or LAION-CLAP .pt")
    p.add_argument(
        "--steps", type=int, default=None, help="stop after step N (the schedule keeps its length)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--mixtures", nargs="+", action="extend", default=None, metavar="DIR",
                   help="SED sources: replace the config's with one source per DIR (weight 1)")  # fmt: skip
    p.add_argument("--online", nargs="+", action="extend", default=None, metavar="MANIFEST",
                   help="SED sources synthesised in the loader: replace the config's with one online source per "
                        "MANIFEST (train split, the data.mixture recipe, weight 1); with --mixtures, both")  # fmt: skip
    p.add_argument("--audio-text", nargs="+", action="extend", default=None, metavar="DIR",
                   help="global sources: replace the config's with one source per DIR (weight 1)")  # fmt: skip
    p.add_argument("--log-level", default="INFO")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. seed=1")
    args = p.parse_intermixed_args(argv)  # key=value items may sit anywhere between the options
    # `--mixtures A B seed=1`: argparse hands key=value items after a list flag to the list; move them back
    for name in ("mixtures", "online", "audio_text"):
        items = getattr(args, name)
        if items:
            setattr(args, name, [i for i in items if not _OVERRIDE_RE.match(i)])
            args.overrides = [i for i in items if _OVERRIDE_RE.match(i)] + args.overrides
            if not getattr(args, name):
                what = "manifest" if name == "online" else "folder"
                p.error(f"--{name.replace('_', '-')} needs at least one {what}")
    for item in args.overrides:
        if "=" not in item:
            p.error(f"unexpected argument {item!r} (overrides are key=value)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from model.train.data import DataError
    from model.train.trainer import Trainer, TrainingAborted

    updates = {}
    if args.steps is not None:
        updates["run.steps"] = args.steps
    if args.init is not None:
        updates["init"] = args.init
    if args.mixtures is not None or args.online is not None:
        updates["data.sed_sources"] = [
            {"name": f"mixtures{i}", "shards": d, "weight": 1.0} for i, d in enumerate(args.mixtures or [])
        ] + [
            {"name": f"online{i}", "kind": "online", "manifest": m, "split": "train", "weight": 1.0}
            for i, m in enumerate(args.online or [])
        ]
    if args.audio_text is not None:
        updates["data.global_sources"] = [
            SourceConfig(f"audio_text{i}", d, 1.0) for i, d in enumerate(args.audio_text)
        ]
    trainer = None
    try:
        cfg = load(args.config, args.overrides, **updates)
        trainer = Trainer(cfg, args.out, resume=args.resume)
        trainer.setup()
        trainer.train()
    except (ValueError, DataError) as e:
        print(f"model.train: error: {e}", file=sys.stderr)
        return 2
    except TrainingAborted as e:
        print(f"model.train: aborted: {e}", file=sys.stderr)
        return 1
    finally:
        if trainer is not None:
            trainer.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
