"""HTSAT audio encoder: log-mel front end, 256×256 folding, Swin stages, 32 frame tokens per 10 s.

Parameter names follow LAION-CLAP's `audio_branch.*` layout (patch_embed.proj/norm,
layers.N.blocks.M.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2},
layers.N.downsample.{reduction, norm}, norm, bn0) so LAION-CLAP / OpenFLAM weights load by name. Tokens are
kept channels-last ([B, H, W, C]) end to end; attention is one fused `scaled_dot_product_attention` call per
block with the relative-position bias and the shifted-window mask folded into `attn_mask`.

Frame mapping (10-s clip, 48 kHz, hop 480): STFT frame t ∈ [0, 1001) sits at interpolated time position
τ = t·1023/1000 (bicubic, align_corners=True, 1001 → 1024); τ lies in quarter q = ⌊τ/256⌋ at column τ mod 256;
the 4×4 patch column is ⌊(τ mod 256)/4⌋ and, after three 2× mergings, the final token column is
w = ⌊(τ mod 256)/32⌋; output frame = q·8 + w = ⌊τ/32⌋. So mel frame t lands in output frame
k(t) = ⌊round(t·1023/1000)/32⌋ (nearest interpolated sample), frame k covers [k, k+1)·0.3125 s. The one exact
tie is t = 500 (τ = 511.5, split equally between frames 15 and 16; `round` gives 16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.config import FrontEndConfig, HTSATConfig
from model.frontend import LogMel, Spectrogram, freq_spec_augment


def mel_frame_to_output_frame(t: int, n_stft: int = 1001, n_interp: int = 1024, frame_width: int = 32) -> int:
    """Output frame that mel (STFT) frame t is folded into (nearest interpolated sample; see module doc)."""
    tau = round(t * (n_interp - 1) / (n_stft - 1))
    return tau // frame_width


def fold_spectrogram(x: torch.Tensor, spec_size: int = 256, n_chunks: int = 4) -> torch.Tensor:
    """[B, T, F] log-mel → [B, 1, spec_size, spec_size]: time resized to n_chunks·spec_size (bicubic,
    align_corners=True), cut into n_chunks quarters stacked along the height (row = quarter·F + mel)."""
    b, _, f = x.shape
    if f * n_chunks != spec_size:
        raise ValueError(f"{n_chunks} chunks × {f} mel bins must equal spec_size {spec_size}")
    x = F.interpolate(x[:, None], size=(spec_size * n_chunks, f), mode="bicubic", align_corners=True)
    x = x[:, 0].transpose(1, 2).reshape(b, f, n_chunks, spec_size)  # [B, F, chunk, time]
    return x.permute(0, 2, 1, 3).reshape(b, 1, n_chunks * f, spec_size)


def tokens_to_frames(x: torch.Tensor, n_chunks: int = 4) -> torch.Tensor:
    """Final tokens [B, H, W, C] (H = n_chunks·f rows) → frames [B, n_chunks·W, C]: mean over the f rows of
    each chunk; frame = chunk·W + w."""
    b, h, w, c = x.shape
    return x.view(b, n_chunks, h // n_chunks, w, c).mean(2).reshape(b, n_chunks * w, c)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """[B, H, W, C] → [B, nW, ws·ws, C] (windows in row-major order)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // ws) * (w // ws), ws * ws, c)


def window_reverse(x: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """[B, nW, ws·ws, C] → [B, H, W, C]."""
    b, _, _, c = x.shape
    x = x.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(ws: int) -> torch.Tensor:
    """Swin relative position index [ws², ws²] into a (2ws−1)² bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def shifted_window_mask(h: int, w: int, ws: int, shift: int, value: float = -100.0) -> torch.Tensor:
    """Mask [nW, ws², ws²]: `value` between tokens that came from different regions before the cyclic shift."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, ws)[0, :, :, 0]  # [nW, N]
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, torch.tensor(value), torch.tensor(0.0))


class DropPath(nn.Module):
    """Stochastic depth per sample (training only)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1 - self.p)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias (Swin)."""

    def __init__(self, dim: int, heads: int, ws: int) -> None:
        super().__init__()
        self.heads, self.ws = heads, ws
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        nn.init.normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(ws), persistent=False)

    def bias(self) -> torch.Tensor:
        """Relative position bias [heads, N, N]."""
        n = self.ws * self.ws
        idx = self.relative_position_index.reshape(-1)
        return self.relative_position_bias_table[idx].view(n, n, self.heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, nW, N, C]; mask: [nW, N, N] additive or None → [B, nW, N, C]."""
        b, nw, n, c = x.shape
        hd = c // self.heads
        qkv = self.qkv(x).view(b, nw, n, 3, self.heads, hd).permute(3, 0, 1, 4, 2, 5)  # [3, B, nW, h, N, hd]
        q, k, v = (t.reshape(b, nw * self.heads, n, hd) for t in qkv.unbind(0))
        bias = self.bias()[None]  # [1, h, N, N]
        if mask is not None:
            bias = bias + mask[:, None]  # [nW, h, N, N]
        else:
            bias = bias.expand(nw, -1, -1, -1)
        bias = bias.reshape(1, nw * self.heads, n, n).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # scale = hd^-0.5 as in Swin
        out = out.view(b, nw, self.heads, n, hd).transpose(2, 3).reshape(b, nw, n, c)
        return self.proj(out)


class SwinBlock(nn.Module):
    """x + attn(norm1(x)) over (shifted) windows, then x + mlp(norm2(x)). Tokens [B, H, W, C]."""

    def __init__(self, dim: int, res: int, heads: int, ws: int, shift: int, mlp_ratio: float, drop_path: float,
                 mask_value: float) -> None:  # fmt: skip
        super().__init__()
        if res <= ws:  # window covers the whole grid: no shift (HTSAT stage 4)
            ws, shift = res, 0
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, ws)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(res, res, ws, shift, mask_value) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = window_reverse(self.attn(window_partition(y, self.ws), self.attn_mask), self.ws, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2×2 neighbour concat [x(0::2,0::2), x(1::2,0::2), x(0::2,1::2), x(1::2,1::2)] → LayerNorm → Linear(4C→2C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    def __init__(self, dim: int, res: int, depth: int, heads: int, cfg: HTSATConfig, dpr: list[float],
                 downsample: bool) -> None:  # fmt: skip
        super().__init__()
        ws = cfg.window_size
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim, res, heads, ws, 0 if i % 2 == 0 else ws // 2, cfg.mlp_ratio, dpr[i], cfg.mask_value
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # [B, H, W, C]


class HTSAT(nn.Module):
    """Waveform [B, 480000] at 48 kHz → frame features [B, 32, C] (pre-projection)."""

    def __init__(self, cfg: HTSATConfig, fe: FrontEndConfig | None = None) -> None:
        super().__init__()
        fe = fe or FrontEndConfig()
        self.cfg, self.fe = cfg, fe
        self.spectrogram_extractor = Spectrogram(fe)
        self.logmel_extractor = LogMel(fe)
        self.bn0 = nn.BatchNorm1d(fe.n_mels)  # same keys as LAION-CLAP's BatchNorm2d(64)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        n_blocks = sum(cfg.depths)
        dpr = [cfg.drop_path_rate * i / max(1, n_blocks - 1) for i in range(n_blocks)]
        res = cfg.spec_size // cfg.patch_size
        layers, start = [], 0
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads, strict=True)):
            last = i == len(cfg.depths) - 1
            dim = cfg.embed_dim * 2**i
            layers.append(BasicLayer(dim, res >> i, depth, heads, cfg, dpr[start : start + depth], not last))
            start += depth
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(cfg.out_dim)
        self.apply(_init_weights)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute Swin blocks in backward (less activation memory for large training batches)."""
        for layer in self.layers:
            layer.grad_checkpointing = enabled

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, samples] → normalised log-mel [B, T, 64] (fp32, outside autocast)."""
        with torch.autocast(wave.device.type, enabled=False):
            x = self.logmel_extractor(self.spectrogram_extractor(wave.float()))
            x = self.bn0(x.transpose(1, 2)).transpose(1, 2)
        if self.training:
            x = freq_spec_augment(x, self.fe.freq_mask_width, self.fe.freq_mask_stripes)
        return x

    def forward_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel [B, T, 64] → frame features [B, 32, C]."""
        x = self.patch_embed(fold_spectrogram(mel, self.cfg.spec_size, self.cfg.n_chunks))
        for layer in self.layers:
            x = layer(x)
        return tokens_to_frames(self.norm(x), self.cfg.n_chunks)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.ndim != 2 or wave.shape[1] != self.fe.clip_samples:
            raise ValueError(f"HTSAT expects [B, {self.fe.clip_samples}] waveforms, got {tuple(wave.shape)}")
        return self.forward_mel(self.log_mel(wave))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)  # = timm's trunc_normal_(std=.02): its cut at ±2 is ±100σ
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
