"""FLAM toolkit — `model` package: HTSAT + text encoder, per-text α/β, inference, checkpoints."""

from model.config import FLAMConfig, FrontEndConfig, HTSATConfig, TextConfig
from model.flam import FLAM, FLAMOutput, TextEmbeddings

__version__ = "0.1.0"
__all__ = [
    "FLAM",
    "FLAMConfig",
    "FLAMOutput",
    "FrontEndConfig",
    "HTSATConfig",
    "TextConfig",
    "TextEmbeddings",
]
