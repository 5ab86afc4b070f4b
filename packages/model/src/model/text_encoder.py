"""Text encoder: any Hugging Face encoder from a local directory (no network), pooled output.

RoBERTa (paper / OpenFLAM): `pooler_output` = tanh(Linear(hidden[:, 0])). Sentence-transformers MiniLM: mean
pooling over real tokens (its checkpoint has no trained pooler). Dynamic padding to the longest text, ≤ 77 tokens.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

POOLINGS = ("pooler", "mean", "cls")
log = logging.getLogger(__name__)


def _require_local_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ValueError(
            f"text encoder directory {p} has no config.json (a local Hugging Face model dir is required)"
        )
    return p


def load_tokenizer(path: str | os.PathLike):  # noqa: ANN201 - a transformers tokenizer
    """AutoTokenizer from a local dir (offline)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_require_local_dir(path)), local_files_only=True)


def load_text_model(path: str | os.PathLike, pooling: str = "pooler", weights: bool = True) -> nn.Module:
    """AutoModel from a local dir; `weights=False` builds from its config only (weights come from a checkpoint)."""
    from transformers import AutoConfig, AutoModel

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    p = _require_local_dir(path)
    kwargs = {} if pooling == "pooler" else {"add_pooling_layer": False}
    if weights:
        return _from_pretrained_reporting(AutoModel, p, pooling, kwargs)
    cfg = AutoConfig.from_pretrained(str(p), local_files_only=True)
    return AutoModel.from_config(cfg, **kwargs)


def _from_pretrained_reporting(auto, p: Path, pooling: str, kwargs: dict) -> nn.Module:  # noqa: ANN001 - AutoModel
    """`from_pretrained` whose key report leaves out what the pooling makes expected: a checkpoint's pooler weights
    are unused with `mean`/`cls` pooling (transformers' report calls that "not ok if you expect identical arch" on
    every load). Anything else missing, unexpected or mismatched is logged, naming the keys."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = auto.from_pretrained(str(p), local_files_only=True, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
    unexpected = sorted(info.get("unexpected_keys") or ())
    if pooling != "pooler":
        unexpected = [k for k in unexpected if not k.startswith("pooler.")]
    issues = {"missing (randomly initialised)": sorted(info.get("missing_keys") or ()), "unused": unexpected,
              "mismatched": sorted(str(k) for k in info.get("mismatched_keys") or ())}  # fmt: skip
    for what, keys in issues.items():
        if keys:
            more = f" … ({len(keys)} in all)" if len(keys) > 8 else ""
            log.warning("text encoder %s: %s weights: %s%s", p, what, ", ".join(keys[:8]), more)
    return model


def tokenize(tokenizer, texts: list[str], max_length: int = 77) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Pad to the longest text of the batch (truncate at max_length incl. special tokens)."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a list of strings")
    if len(texts) == 0:
        raise ValueError("texts must not be empty")
    enc = tokenizer(
        list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def pool_text(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str
) -> torch.Tensor:
    """Run the encoder and pool to one vector per text [K, hidden]."""
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    if pooling == "pooler":
        if getattr(out, "pooler_output", None) is None:
            raise ValueError("pooling='pooler' but the text model has no pooler (use pooling='mean')")
        return out.pooler_output
    hidden = out.last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
