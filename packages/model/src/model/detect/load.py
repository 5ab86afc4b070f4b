"""Load the checkpoint a command line names, on the device it names (one-line errors for the CLIs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_model(checkpoint: str, device: str, batch_size: int, bf16: bool) -> Any:
    """FLAM.from_pretrained on `device`; ValueError (one line) for a bad folder or device."""
    import torch

    from model import FLAM

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device {device}: {e}") from None
    if not Path(checkpoint).is_dir():
        raise ValueError(
            f"--checkpoint {checkpoint}: not a folder (convert foreign weights with python -m model.convert)"
        )
    model = FLAM.from_pretrained(checkpoint).to(dev).eval()
    model.inference_batch_size = batch_size
    if bf16 and dev.type == "cuda":
        model.autocast_dtype = torch.bfloat16
    return model
