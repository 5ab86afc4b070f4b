"""Checkpoints: safetensors + config.json, and importers for LAION-CLAP `.pt` and OpenFLAM `.pth` files.

`config.json` records the sha256 of `model.safetensors` (`weights_sha256`); loading checks it, so a damaged,
truncated or swapped weights file is a ValueError naming the file, as is one safetensors cannot parse or one
holding NaN/Inf weights. A checkpoint without the key (written before it existed, or edited on purpose with the
key removed) loads without the hash check.

Foreign files load with `torch.load(weights_only=True)`. Every key is accounted for: a model key missing from
the file, an unknown file key, or a shape mismatch raises `KeyMismatchError` listing the names; the only keys
dropped are the explicit allow-lists below, and the deterministic buffers among them (DFT kernels, mel
filterbank, Swin relative-position index and shifted-window masks) are checked against ours before dropping.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from model.config import FLAMConfig, HTSATConfig, TextConfig, htsat_preset
from model.flam import FLAM
from model.frontend import dft_kernels
from model.text_encoder import load_text_model, load_tokenizer

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TEXT_DIR = "text_encoder"
FORMAT_VERSION = 1
HASH_KEY = "weights_sha256"  # config.json: sha256 of model.safetensors, checked on load

OPENFLAM_LICENSE_NOTICE = (
    "NOTICE: the released OpenFLAM weights (open_flam_oct17.pth) are distributed under a NON-COMMERCIAL licence; "
    "using them through this toolkit does not change their licence terms — do not use them commercially."
)

# file keys that carry no trainable state; checked against our own deterministic buffers, then dropped
_CHECKED_BUFFERS = re.compile(
    r"^audio_branch\.(spectrogram_extractor\.stft\.conv_(real|imag)\.weight|logmel_extractor\.melW"
    r"|layers\.\d+\.blocks\.\d+\.(attn\.relative_position_index|attn_mask))$"
)
# non-persistent buffers in current transformers, present in files written by older versions
_TEXT_BUFFERS = re.compile(r"^text_branch\.embeddings\.(position_ids|token_type_ids)$")
# LAION-CLAP parts FLAM does not use (AudioSet SED head, MLP-loss transforms, text temperature)
_LAION_EXTRAS = re.compile(
    r"^(audio_branch\.(tscam_conv|head)\.|audio_transform\.|text_transform\.|logit_scale_t$)"
)
# FLAM parameters a CLAP checkpoint does not have (initialised as in App. C.6)
_FLAM_ONLY = re.compile(r"^(fc_per_text_logit_scale\.|fc_per_text_logit_bias\.|aed_logit_scale$)")


class KeyMismatchError(ValueError):
    """Raised when a state dict does not match the model; lists the offending keys by name."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str], mismatched: list[str]) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = [f"state dict from {source} does not match the model:"]
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)):
            if keys:
                parts.append(
                    f"  {name} ({len(keys)}): " + ", ".join(keys[:40]) + (" …" if len(keys) > 40 else "")
                )
        super().__init__("\n".join(parts))


# ---------------------------------------------------------------------------- own format
_CHECKPOINT_ENTRIES = frozenset({WEIGHTS_NAME, CONFIG_NAME, TEXT_DIR})


def _write_checkpoint(model: FLAM, out: Path) -> None:
    """Write model.safetensors, config.json and text_encoder/ into the (new, empty) directory `out`."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(
        state, str(out / WEIGHTS_NAME), metadata={"format": "pt", "flam_format_version": str(FORMAT_VERSION)}
    )
    text_dir = out / TEXT_DIR
    model.text_branch.config.save_pretrained(str(text_dir))
    model.tokenizer.save_pretrained(str(text_dir))
    cfg = replace(model.config, text=replace(model.config.text, path=TEXT_DIR))
    meta = {
        "format_version": FORMAT_VERSION,
        "flam": cfg.to_dict(),
        HASH_KEY: file_sha256(out / WEIGHTS_NAME),
    }
    (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2))


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _finite(v: torch.Tensor) -> bool:
    """All elements finite; the sum (NaN/Inf propagate) is the fast path, the element check decides overflow."""
    return bool(torch.isfinite(v.sum())) or bool(torch.isfinite(v).all())


def read_weights(path: Path, map_location: str = "cpu", sha256: str | None = None) -> dict[str, torch.Tensor]:
    """model.safetensors → state dict; any damage is a ValueError naming `path`: a sha256 other than the recorded
    one, a file safetensors cannot parse (truncated, corrupt header), or NaN/Inf in a floating-point tensor."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if sha256 is not None:
        try:
            got = file_sha256(path)
        except OSError as e:
            raise ValueError(f"{path} cannot be read: {e}") from e
        if got != sha256:
            raise ValueError(
                f"{path} is damaged or was changed after saving: its sha256 {got[:16]}… is not the "
                f"{sha256[:16]}… recorded in {path.parent / CONFIG_NAME} ('{HASH_KEY}'); if you changed it on "
                "purpose, delete that key"
            )
    try:
        state = load_file(str(path), device=map_location)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e
    bad = [k for k, v in state.items() if v.is_floating_point() and not _finite(v)]
    if bad:
        raise ValueError(
            f"{path} holds NaN or Inf in {len(bad)} tensor(s): {', '.join(bad[:10])}"
            + (" …" if len(bad) > 10 else "")
        )
    return state


def _sibling(out: Path, tag: str) -> Path:
    """New empty directory beside `out` (same file system, so renames are atomic; mode from the umask)."""
    p = out.parent / f".{out.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    p.mkdir()
    return p


def save_pretrained(model: FLAM, out_dir: str | os.PathLike) -> None:
    """Write model.safetensors, config.json and text_encoder/ (HF config + tokenizer) atomically.

    Everything is written into a temporary directory beside `out_dir`, which then replaces it by rename: a save
    killed part-way leaves the previous checkpoint (or none) in place, never a mix. An existing `out_dir` may only
    hold a previous checkpoint (its files are replaced as a whole); other entries raise ValueError.
    """
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"cannot save a checkpoint to {out}: it exists and is not a directory")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _CHECKPOINT_ENTRIES)
        if foreign:
            raise ValueError(
                f"cannot save a checkpoint to {out}: it holds entries that are not part of a FLAM checkpoint "
                f"({', '.join(foreign[:10])}); choose an empty or new directory"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, "tmp")
    try:
        _write_checkpoint(model, tmp)
        if out.exists():
            old = _sibling(out, "old")
            # between these two renames `out` is absent and the previous checkpoint lies whole in `old`
            os.replace(out, old / out.name)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old / out.name, out)
                old.rmdir()
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_pretrained(ckpt_dir: str | os.PathLike, map_location: str = "cpu") -> FLAM:
    """Inverse of `save_pretrained` (strict: any key difference raises KeyMismatchError; a damaged weights file
    raises ValueError naming it, see `read_weights`)."""
    d = Path(ckpt_dir)
    if not (d / CONFIG_NAME).is_file() or not (d / WEIGHTS_NAME).is_file():
        raise ValueError(f"{d} is not a FLAM checkpoint (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        meta = json.loads((d / CONFIG_NAME).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{d / CONFIG_NAME} is not valid JSON ({e})") from e
    if not isinstance(meta, dict) or "flam" not in meta:
        raise ValueError(f"{d / CONFIG_NAME} has no 'flam' section")
    sha256 = meta.get(HASH_KEY)
    if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)):
        raise ValueError(
            f"{d / CONFIG_NAME}: '{HASH_KEY}' must be 64 lower-case hex digits, got {sha256!r:.80}"
        )
    cfg = FLAMConfig.from_dict(meta["flam"], source=str(d / CONFIG_NAME))
    text_path = Path(cfg.text.path)
    if not text_path.is_absolute():
        text_path = d / text_path
    cfg = replace(cfg, text=replace(cfg.text, path=str(text_path)))
    model = FLAM(cfg, load_text_model(text_path, cfg.text.pooling, weights=False), load_tokenizer(text_path))
    state = read_weights(d / WEIGHTS_NAME, map_location, sha256)
    load_checked(model, state, source=str(d / WEIGHTS_NAME))
    return model.eval()


def load_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                 allow_missing: Iterable[re.Pattern] = ()) -> list[str]:  # fmt: skip
    """Strict load; keys of `model` matching an `allow_missing` pattern may be absent (returned)."""
    own = model.state_dict()
    allowed = list(allow_missing)
    missing = [k for k in own if k not in state]
    tolerated = [k for k in missing if any(p.search(k) for p in allowed)]
    missing = [k for k in missing if k not in tolerated]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise KeyMismatchError(source, missing, unexpected, mismatched)
    model.load_state_dict(state, strict=False)
    return tolerated


# ---------------------------------------------------------------------------- foreign files
def load_foreign_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """torch.load(weights_only=True); unwrap {'state_dict': …}; strip a DDP `module.` prefix."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report which file and why
        raise ValueError(f"{p} cannot be loaded with weights_only=True ({type(e).__name__}: {e})") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{p} does not hold a state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def infer_htsat_config(state: dict[str, torch.Tensor], prefix: str = "audio_branch.") -> HTSATConfig:
    """Read embed dim, depths and heads from HTSAT key names/shapes."""
    key = prefix + "patch_embed.proj.weight"
    if key not in state:
        raise KeyMismatchError("checkpoint", [key], [], [])
    embed = int(state[key].shape[0])
    depths, heads = [], []
    i = 0
    while f"{prefix}layers.{i}.blocks.0.norm1.weight" in state:
        n = 0
        while f"{prefix}layers.{i}.blocks.{n}.norm1.weight" in state:
            n += 1
        depths.append(n)
        heads.append(int(state[f"{prefix}layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1]))
        i += 1
    return HTSATConfig(embed_dim=embed, depths=tuple(depths), num_heads=tuple(heads))


def _check_and_drop_buffers(model: FLAM, state: dict[str, torch.Tensor], extras: re.Pattern | None) -> None:
    """Remove known non-trainable file keys after checking deterministic ones against ours (in place)."""
    own_buffers = dict(model.named_buffers())
    real, imag = dft_kernels(model.config.frontend.n_fft)
    bad, dropped = [], []
    for k in list(state):
        v = state[k]
        if _CHECKED_BUFFERS.match(k):
            if k.endswith("conv_real.weight"):
                ok = v.shape == real.shape and np.allclose(v.float().numpy(), real, atol=1e-4)
            elif k.endswith("conv_imag.weight"):  # sign convention does not affect power
                ok = v.shape == imag.shape and np.allclose(np.abs(v.float().numpy()), np.abs(imag), atol=1e-4)
            else:
                ours = own_buffers.get(k)
                ok = (
                    ours is not None
                    and ours.shape == v.shape
                    and torch.allclose(ours.float(), v.float(), atol=1e-5)
                )
            if not ok:
                bad.append(f"{k} (differs from this implementation's deterministic buffer)")
            del state[k]
        elif _TEXT_BUFFERS.match(k) or (extras is not None and extras.match(k)):
            dropped.append(k)
            del state[k]
    if bad:
        raise KeyMismatchError("checkpoint", [], [], bad)
    if dropped:
        log.info("dropped %d known unused keys: %s", len(dropped), ", ".join(sorted(dropped)))


def _warn_tokenizer(model: FLAM) -> None:
    n_tok, n_emb = len(model.tokenizer), int(model.text_branch.config.vocab_size)
    if n_tok != n_emb:
        log.warning("tokenizer has %d tokens but the text model's vocabulary is %d: is this the right tokenizer?",
                    n_tok, n_emb)  # fmt: skip


def import_openflam(pth_path: str | os.PathLike, text_encoder: str | os.PathLike) -> FLAM:
    """Released OpenFLAM weights (flat state dict, HTSAT-base + RoBERTa-base) → FLAM. Prints the licence notice."""
    print(OPENFLAM_LICENSE_NOTICE, file=sys.stderr)
    log.info(OPENFLAM_LICENSE_NOTICE)
    state = load_foreign_state_dict(pth_path)
    text_model = load_text_model(text_encoder, "pooler", weights=False)
    hidden = int(text_model.config.hidden_size)
    cfg = FLAMConfig(
        audio=infer_htsat_config(state),
        text=TextConfig(path=str(text_encoder), pooling="pooler", hidden_size=hidden),
    )
    model = FLAM(cfg, text_model, load_tokenizer(text_encoder))
    _check_and_drop_buffers(model, state, extras=None)
    load_checked(model, state, source=str(pth_path))
    _warn_tokenizer(model)
    return model.eval()


def import_laion_clap(
    pt_path: str | os.PathLike, text_encoder: str | os.PathLike, audio: str = "base"
) -> FLAM:
    """LAION-CLAP checkpoint (HTSAT-tiny/base + RoBERTa) → FLAM with fresh α/β heads (paper App. C.5/C.6)."""
    state = load_foreign_state_dict(pt_path)
    want = htsat_preset(audio)
    found = infer_htsat_config(state)
    if (found.embed_dim, found.depths, found.num_heads) != (want.embed_dim, want.depths, want.num_heads):
        raise ValueError(
            f"{pt_path} holds HTSAT embed {found.embed_dim}, depths {found.depths}, heads {found.num_heads}, "
            f"not the {audio!r} config (embed {want.embed_dim}, depths {want.depths})"
        )
    text_model = load_text_model(text_encoder, "pooler", weights=False)
    hidden = int(text_model.config.hidden_size)
    cfg = FLAMConfig(
        audio=want, text=TextConfig(path=str(text_encoder), pooling="pooler", hidden_size=hidden)
    )
    model = FLAM(cfg, text_model, load_tokenizer(text_encoder))
    _check_and_drop_buffers(model, state, extras=_LAION_EXTRAS)
    fresh = load_checked(model, state, source=str(pt_path), allow_missing=[_FLAM_ONLY])
    log.info("initialised FLAM-only parameters (not in a CLAP checkpoint): %s", ", ".join(fresh))
    _warn_tokenizer(model)
    return model
