"""Model side of the evaluation: load a checkpoint, embed texts once, frame embeddings in batches, and frame
probabilities (Eq. 8, approximate or unbiased) + the 3-frame median filter (App. C.7) from embeddings.

Probabilities are computed from embeddings with the model's own functions (`model.heads.frame_probability`,
`model.inference.median_filter_frames`), so a dataset's audio goes through the encoder once and both inference
methods, and any per-clip text subset (open vocabulary), come from the same frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from model import FLAM
from model.heads import frame_probability
from model.inference import median_filter_frames

METHODS = ("approximate", "unbiased")


def load_model(checkpoint: str | Path, text_encoder: str | Path | None = None, device: str = "auto",
               batch_size: int = 16) -> FLAM:  # fmt: skip
    """A FLAM folder (`from_pretrained`) or an OpenFLAM `.pth` (needs `text_encoder`), in eval mode on `device`."""
    p = Path(checkpoint)
    if p.is_dir():
        model = FLAM.from_pretrained(p)
    elif p.is_file() and p.suffix == ".pth":
        if text_encoder is None:
            raise ValueError(
                f"--checkpoint {p} is an OpenFLAM .pth: give --text-encoder DIR (a local roberta-base)"
            )
        model = FLAM.from_openflam(p, text_encoder)
    else:
        raise ValueError(f"--checkpoint {p}: not a FLAM checkpoint folder or an OpenFLAM .pth file")
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    model = model.to(dev).eval()
    model.inference_batch_size = batch_size
    if dev.type == "cuda":
        model.autocast_dtype = torch.bfloat16
    return model


@torch.inference_mode()
def text_heads(
    model: FLAM, texts: Sequence[str], chunk: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings [K, D], α [K], β [K]) as float32 arrays, texts normalised by the model's rule."""
    embs, alphas, betas = [], [], []
    for i in range(0, len(texts), chunk):
        enc = model.tokenize(list(texts[i : i + chunk]))
        t = model.encode_text(enc["input_ids"], enc["attention_mask"])
        embs.append(t.embeds.float().cpu().numpy())
        alphas.append(t.alpha.float().cpu().numpy())
        betas.append(t.beta.float().cpu().numpy())
    if not embs:
        d = model.config.joint_dim
        return np.zeros((0, d), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(embs), np.concatenate(alphas), np.concatenate(betas)


def probabilities(frames: np.ndarray, emb: np.ndarray, alpha: np.ndarray, beta: np.ndarray, method: str,
                  median_filter: int = 3) -> np.ndarray:  # fmt: skip
    """[K, T] probabilities of texts (emb/α/β rows) over frames [T, D] (both L2-normalised)."""
    sim = torch.from_numpy(emb @ frames.T)  # [K, T]
    p = frame_probability(sim, torch.from_numpy(alpha), torch.from_numpy(beta), method).numpy()
    return median_filter_frames(p, median_filter)
