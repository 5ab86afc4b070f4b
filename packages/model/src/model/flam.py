"""The FLAM module: HTSAT frames + clip, text encoder, shared projections, per-text α/β (paper §3, App. C)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from model.config import FLAMConfig
from model.heads import l2_normalize, per_text_alpha, per_text_head, projection_mlp
from model.htsat import HTSAT
from model.text_encoder import load_text_model, load_tokenizer, pool_text, tokenize
from model.text_slots import normalize_text


@dataclass
class TextEmbeddings:
    embeds: torch.Tensor  # [K, D] L2-normalised
    alpha: torch.Tensor  # [K] per-text scale, already exp'd
    beta: torch.Tensor  # [K] per-text bias


@dataclass
class FLAMOutput:
    frames: torch.Tensor  # [B, 32, D] L2-normalised frame embeddings
    clip: torch.Tensor  # [B, D] L2-normalised clip embeddings
    texts: torch.Tensor  # [K, D] L2-normalised text embeddings
    alpha: torch.Tensor  # [K]
    beta: torch.Tensor  # [K]
    logit_scale: torch.Tensor  # scalar, exp'd and clamped CLIP temperature (Eq. 1)


class FLAM(nn.Module):
    """Frame-wise language-audio model. Build with `FLAM.from_config`, or load with the `from_*` constructors."""

    def __init__(self, config: FLAMConfig, text_model: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.config = config
        self.audio_branch = HTSAT(config.audio, config.frontend)
        self.text_branch = text_model
        self.tokenizer = tokenizer
        hidden = int(text_model.config.hidden_size)
        if hidden != config.text.hidden_size:
            raise ValueError(
                f"text model hidden size {hidden} != config.text.hidden_size {config.text.hidden_size}"
            )
        self.audio_projection = projection_mlp(config.audio.out_dim, config.joint_dim)
        self.text_projection = projection_mlp(hidden, config.joint_dim)
        self.fc_per_text_logit_scale = per_text_head(hidden, config.alpha_bias_init)
        self.fc_per_text_logit_bias = per_text_head(hidden, config.beta_bias_init)
        self.logit_scale_a = nn.Parameter(torch.tensor(config.logit_scale_init))
        # Fixed at exp(0) = 1, not trained: OpenFLAM holds it at 1 (requires_grad=False) and the paper's α(y) has
        # no such factor (Eq. 8). Kept as a (frozen) parameter so the state-dict keys stay as they are: our
        # safetensors checkpoints and the OpenFLAM / LAION-CLAP importers load unchanged. load_state_dict keeps
        # requires_grad as set here (it copies values; with assign=True torch also keeps the old flag), .train()
        # does not touch it, and requires_grad_ below leaves it frozen.
        self.aed_logit_scale = nn.Parameter(torch.tensor(0.0), requires_grad=False)
        self.inference_batch_size = 16  # windows per forward in the inference helpers
        self.inference_hop_frames = 16  # window hop in output frames (16 = 5 s); see model.inference
        self.autocast_dtype: torch.dtype | None = None  # e.g. torch.bfloat16 for CUDA inference
        # set by .compile(); stored around nn.Module so it is no submodule (no extra state_dict keys)
        object.__setattr__(self, "_compiled_audio", None)

    # ---------------------------------------------------------------- construction / checkpoints
    @classmethod
    def from_config(cls, config: FLAMConfig, text_weights: bool = True) -> FLAM:
        """New model; the text encoder loads its pretrained weights from `config.text.path` when `text_weights`."""
        if not config.text.path:
            raise ValueError("config.text.path must name a local Hugging Face text encoder directory")
        text_model = load_text_model(config.text.path, config.text.pooling, weights=text_weights)
        return cls(config, text_model, load_tokenizer(config.text.path))

    @classmethod
    def from_pretrained(cls, ckpt_dir: str | os.PathLike, map_location: str = "cpu") -> FLAM:
        from model.checkpoint import load_pretrained

        return load_pretrained(ckpt_dir, map_location)

    @classmethod
    def from_openflam(cls, pth_path: str | os.PathLike, text_encoder: str | os.PathLike) -> FLAM:
        from model.checkpoint import import_openflam

        return import_openflam(pth_path, text_encoder)

    @classmethod
    def from_laion_clap(
        cls, pt_path: str | os.PathLike, text_encoder: str | os.PathLike, audio: str = "base"
    ) -> FLAM:
        from model.checkpoint import import_laion_clap

        return import_laion_clap(pt_path, text_encoder, audio)

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        from model.checkpoint import save_pretrained

        save_pretrained(self, out_dir)

    # ---------------------------------------------------------------- core encoders
    @property
    def device(self) -> torch.device:
        return self.logit_scale_a.device

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp of the clamped CLIP temperature (Eq. 1; clamp ≤ ln 100)."""
        return self.logit_scale_a.clamp(max=self.config.logit_scale_max).exp()

    def requires_grad_(self, requires_grad: bool = True) -> FLAM:
        """nn.Module.requires_grad_, except that `aed_logit_scale` stays frozen (fixed at 1, see __init__)."""
        super().requires_grad_(requires_grad)
        self.aed_logit_scale.requires_grad_(False)
        return self

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids of `model.text_slots.normalize_text(t)` for each text — the one text rule of training and
        inference (NFKC, lower case, whitespace collapsed, edge punctuation stripped; idempotent, so the trainer's
        already-normalised slot texts pass through unchanged). Lower case also matches OpenFLAM, whose released
        model was trained on lower-case text. An empty text ("" padding slot) is tokenised as is; the inference
        helpers reject texts that are empty after normalisation."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a list of strings")
        enc = tokenize(self.tokenizer, [normalize_text(t) for t in texts], self.config.text.max_length)
        return {k: v.to(self.device) for k, v in enc.items()}

    def audio_features(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, 480000] → pre-projection frame features [B, 32, C]."""
        return self.audio_branch(wave)

    def project_audio(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-projection frames [B, L, C] → (frames [B, L, D], clip [B, D]) normalised; clip = proj(mean frames)."""
        frames = l2_normalize(self.audio_projection(feats))
        clip = l2_normalize(self.audio_projection(feats.mean(1)))
        return frames, clip

    def encode_audio(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.project_audio(self.audio_features(wave))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextEmbeddings:
        pooled = pool_text(self.text_branch, input_ids, attention_mask, self.config.text.pooling)
        alpha = per_text_alpha(self.fc_per_text_logit_scale(pooled).squeeze(-1), self.aed_logit_scale)
        beta = self.fc_per_text_logit_bias(pooled).squeeze(-1)
        return TextEmbeddings(l2_normalize(self.text_projection(pooled)), alpha, beta)

    def forward(
        self, wave: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> FLAMOutput:
        """Training forward: waveforms [B, 480000] and tokenised texts [K, T]."""
        frames, clip = self.encode_audio(wave)
        t = self.encode_text(input_ids, attention_mask)
        return FLAMOutput(frames, clip, t.embeds, t.alpha, t.beta, self.logit_scale)

    # ---------------------------------------------------------------- inference API (any length / rate)
    def compile(self, mode: str | None = None) -> FLAM:  # type: ignore[override]
        """Opt in to torch.compile of the audio branch used by the inference helpers (dynamic=False).

        Every inference chunk is then padded to `inference_batch_size` windows so the compiled graph sees one
        shape (the padding outputs are dropped): set the batch size before calling, and expect the first call to
        pay the compilation. Training (`forward`) stays eager. Returns self.
        """
        compiled = torch.compile(self.audio_branch, mode=mode, dynamic=False)
        object.__setattr__(self, "_compiled_audio", compiled)
        return self

    @property
    def inference_audio_branch(self) -> nn.Module:
        """The audio branch the inference helpers run: the compiled one after `.compile()`, else the eager one."""
        return self._compiled_audio if self._compiled_audio is not None else self.audio_branch

    def frame_times(self, n_frames: int) -> np.ndarray:
        """Start time (s) of each output frame (0.3125 s grid)."""
        from model.inference import frame_times

        return frame_times(n_frames, self.config)

    def frame_embeddings(self, wave: Any, sample_rate: int) -> np.ndarray:
        """[n_frames, D] L2-normalised frame embeddings for audio of any length."""
        from model.inference import frame_embeddings

        return frame_embeddings(self, wave, sample_rate)

    def embed_audio(self, wave: Any, sample_rate: int) -> np.ndarray:
        """[D] clip embedding (projection of the mean pre-projection frame over the audio)."""
        from model.inference import embed_audio

        return embed_audio(self, wave, sample_rate)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """[K, D] L2-normalised text embeddings."""
        from model.inference import embed_text

        return embed_text(self, texts)

    def frame_probabilities(self, wave: Any, sample_rate: int, texts: list[str], method: str = "approximate",
                            median_filter: int = 3) -> np.ndarray:  # fmt: skip
        """[n_texts, n_frames] probabilities (Eq. 8) after the 3-frame median filter (App. C.7).

        `median_filter=1` gives the raw per-frame probabilities."""
        from model.inference import frame_probabilities

        return frame_probabilities(self, wave, sample_rate, texts, method, median_filter)

    def frame_embeddings_batch(
        self, waves: Sequence[Any], sample_rate: int | Sequence[int]
    ) -> list[np.ndarray]:
        """Per input [n_frames_i, D] frame embeddings; all windows of all inputs batched together."""
        from model.inference import frame_embeddings_batch

        return frame_embeddings_batch(self, waves, sample_rate)

    def embed_audio_batch(self, waves: Sequence[Any], sample_rate: int | Sequence[int]) -> np.ndarray:
        """[B, D] clip embeddings of a list of inputs (any lengths / rates / channels)."""
        from model.inference import embed_audio_batch

        return embed_audio_batch(self, waves, sample_rate)

    def frame_probabilities_batch(self, waves: Sequence[Any], sample_rate: int | Sequence[int], texts: list[str],
                                  method: str = "approximate", median_filter: int = 3) -> list[np.ndarray]:  # fmt: skip
        """Per input [n_texts, n_frames_i] probabilities (Eq. 8): one text pass, all windows batched in chunks of
        `inference_batch_size`, same windowing/stitching as `frame_probabilities` (which calls this)."""
        from model.inference import frame_probabilities_batch

        return frame_probabilities_batch(self, waves, sample_rate, texts, method, median_filter)

    def detect(self, wave: Any, sample_rate: int, texts: list[str], threshold: float = 0.5,
               method: str = "approximate", median_filter: int = 3) -> list[list[tuple[float, float]]]:  # fmt: skip
        """Segments (start_s, end_s) per text where the (median-filtered) probability ≥ threshold."""
        from model.inference import detect

        return detect(self, wave, sample_rate, texts, threshold, method, median_filter)
