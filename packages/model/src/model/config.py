"""Typed configs for the FLAM model: HTSAT audio encoder, text encoder, joint space (paper §3, App. C)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FrontEndConfig:
    """LAION-CLAP / OpenFLAM log-mel front end (same numbers as the released model)."""

    sample_rate: int = 48000
    clip_samples: int = 480000  # 10 s
    n_fft: int = 1024
    hop_length: int = 480
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    amin: float = 1e-10
    # frequency-only SpecAugment (training only; time masking would corrupt frame labels)
    freq_mask_width: int = 8
    freq_mask_stripes: int = 2

    @property
    def n_stft_frames(self) -> int:
        return self.clip_samples // self.hop_length + 1  # 1001 (center=True)


@dataclass(frozen=True)
class HTSATConfig:
    """Swin/HTSAT encoder on the 256×256 folded spectrogram (HTSAT paper; FLAM App. C.5)."""

    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 12, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    patch_size: int = 4
    spec_size: int = 256
    n_chunks: int = 4  # time quarters stacked on the height axis
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    mask_value: float = -100.0  # shifted-window mask value used by Swin/HTSAT (not -inf)

    @property
    def out_dim(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def n_frames(self) -> int:
        """Output frames per 10-s clip: chunks × final-grid width (4 × 8 = 32)."""
        final = self.spec_size // self.patch_size // 2 ** (len(self.depths) - 1)
        return self.n_chunks * final


HTSAT_PRESETS: dict[str, HTSATConfig] = {
    "tiny": HTSATConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(4, 8, 16, 32)),
    "base": HTSATConfig(embed_dim=128, depths=(2, 2, 12, 2), num_heads=(4, 8, 16, 32)),
    # CPU test size: same geometry (256×256, window 8, 4 stages, shifted blocks), tiny width
    "small": HTSATConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)),
}


@dataclass(frozen=True)
class TextConfig:
    """Hugging Face text encoder from a local directory (no network)."""

    path: str = ""  # local dir with config.json + tokenizer (weights optional when loaded from a checkpoint)
    pooling: str = "pooler"  # "pooler" (RoBERTa / OpenFLAM) | "mean" (sentence-transformers MiniLM) | "cls"
    max_length: int = 77
    hidden_size: int = 768


@dataclass(frozen=True)
class FLAMConfig:
    """Joint model: projections, per-text α/β heads, temperatures (paper §3, App. C.6)."""

    audio: HTSATConfig = field(default_factory=lambda: HTSAT_PRESETS["base"])
    frontend: FrontEndConfig = field(default_factory=FrontEndConfig)
    text: TextConfig = field(default_factory=TextConfig)
    joint_dim: int = 512
    logit_scale_init: float = math.log(1 / 0.07)  # CLIP temperature (Eq. 1)
    logit_scale_max: float = math.log(100.0)
    alpha_bias_init: float = math.log(10.0)  # App. C.6: last-layer bias of MLP_α
    beta_bias_init: float = -8.0  # App. C.6: last-layer bias of MLP_β

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> FLAMConfig:
        """Inverse of `to_dict`; every field must be present and none unknown (ValueError naming them and `source`)."""
        unknown, missing = _key_diff(cls, d, "")
        for name, kind in (("audio", HTSATConfig), ("frontend", FrontEndConfig), ("text", TextConfig)):
            if isinstance(d, dict) and name in d:
                u, m = _key_diff(kind, d[name], name + ".")
                unknown, missing = unknown + u, missing + m
        if unknown or missing:
            parts = [
                f"unknown key(s) {unknown}" if unknown else "",
                f"missing key(s) {missing}" if missing else "",
            ]
            raise ValueError(f"{source}: {' and '.join(p for p in parts if p)} in the FLAM config")
        top = dict(d)
        audio = dict(top.pop("audio"))
        for k in ("depths", "num_heads"):
            audio[k] = tuple(audio[k])
        return cls(
            audio=HTSATConfig(**audio),
            frontend=FrontEndConfig(**top.pop("frontend")),
            text=TextConfig(**top.pop("text")),
            **top,
        )


def _key_diff(kind: type, d: Any, prefix: str) -> tuple[list[str], list[str]]:
    """(unknown, missing) keys of JSON object `d` against the fields of dataclass `kind`, named with `prefix`."""
    names = {f.name for f in dataclasses.fields(kind)}
    if not isinstance(d, dict):
        return [f"{prefix.rstrip('.') or 'config'} (not a JSON object)"], []
    return sorted(prefix + k for k in set(d) - names), sorted(prefix + k for k in names - set(d))


def htsat_preset(name: str) -> HTSATConfig:
    if name not in HTSAT_PRESETS:
        raise ValueError(f"unknown HTSAT config {name!r}; choose one of {sorted(HTSAT_PRESETS)}")
    return HTSAT_PRESETS[name]
