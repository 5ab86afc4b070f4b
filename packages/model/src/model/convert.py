"""Convert foreign checkpoints to this toolkit's safetensors format.

python -m model.convert openflam open_flam_oct17.pth --text-encoder ROBERTA_DIR OUT_DIR
python -m model.convert laion-clap 630k-audioset-best.pt --text-encoder ROBERTA_DIR --audio tiny OUT_DIR
"""

from __future__ import annotations

import argparse
import logging
import sys

from model.checkpoint import import_laion_clap, import_openflam


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.convert", description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["openflam", "laion-clap"])
    ap.add_argument("checkpoint", help=".pth / .pt file (loaded with weights_only=True)")
    ap.add_argument("out_dir", help="output directory (model.safetensors + config.json + text_encoder/)")
    ap.add_argument("--text-encoder", required=True, help="local RoBERTa-base dir (config.json + tokenizer)")
    ap.add_argument("--audio", default="base", choices=["tiny", "base"], help="HTSAT size (laion-clap only)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.kind == "openflam":
            model = import_openflam(args.checkpoint, args.text_encoder)
        else:
            model = import_laion_clap(args.checkpoint, args.text_encoder, args.audio)
        model.save_pretrained(args.out_dir)
    except (ValueError, FileNotFoundError) as e:  # bad file / keys / output dir: say what, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out_dir} ({n / 1e6:.1f} M parameters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
