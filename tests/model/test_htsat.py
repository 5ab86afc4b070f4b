"""HTSAT: fold/unfold maths, frame mapping marker, Swin details (qkv order, −100 mask, rel-pos bias), shapes."""

import re

import pytest
import torch
import torch.nn.functional as F

from model.config import HTSAT_PRESETS
from model.htsat import (
    HTSAT,
    PatchMerging,
    WindowAttention,
    fold_spectrogram,
    mel_frame_to_output_frame,
    relative_position_index,
    shifted_window_mask,
    tokens_to_frames,
    window_partition,
    window_reverse,
)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return HTSAT(HTSAT_PRESETS["small"]).eval()


def test_fold_places_quarters_on_height():
    x = torch.zeros(1, 1001, 64)
    x[0, 0, 5] = 1.0  # mel frame 0 → τ 0 → quarter 0, column 0
    x[0, 1000, 7] = 2.0  # last frame → τ 1023 → quarter 3, column 255
    x[0, 400, 3] = 3.0  # τ = round(400·1.023) = 409 → quarter 1, column 153
    img = fold_spectrogram(x)
    assert img.shape == (1, 1, 256, 256)
    assert img[0, 0, 0 * 64 + 5, 0] == pytest.approx(1.0)
    assert img[0, 0, 3 * 64 + 7, 255] == pytest.approx(2.0)
    sub = img[0, 0].clone()
    sub[5, 0] = sub[3 * 64 + 7, 255] = 0
    r, c = divmod(int(sub.abs().argmax()), 256)
    assert (r, c) == (1 * 64 + 3, 153)


def test_fold_time_axis_is_bicubic_align_corners():
    x = torch.randn(2, 1001, 64)
    ref = F.interpolate(x[:, None], size=(1024, 64), mode="bicubic", align_corners=True)[
        :, 0
    ]  # [B, 1024, 64]
    img = fold_spectrogram(x)[:, 0]
    for q in range(4):
        torch.testing.assert_close(
            img[:, q * 64 : (q + 1) * 64, :], ref[:, q * 256 : (q + 1) * 256].transpose(1, 2)
        )


def test_tokens_to_frames_mapping():
    h = torch.arange(8.0)[:, None].expand(8, 8)
    w = torch.arange(8.0)[None, :].expand(8, 8)
    tok = torch.stack([h, w], -1)[None]  # [1, 8, 8, 2]
    fr = tokens_to_frames(tok)
    assert fr.shape == (1, 32, 2)
    for k in range(32):
        q, wk = divmod(k, 8)
        assert fr[0, k, 0] == pytest.approx(q * 2 + 0.5)  # mean of rows 2q, 2q+1
        assert fr[0, k, 1] == wk


def test_mapping_formula_examples():
    assert mel_frame_to_output_frame(0) == 0
    assert mel_frame_to_output_frame(1000) == 31
    assert mel_frame_to_output_frame(30) == 0  # τ = 31
    assert mel_frame_to_output_frame(31) == 1  # τ = round(31.71) = 32
    assert [mel_frame_to_output_frame(t) for t in range(1001)] == sorted(
        mel_frame_to_output_frame(t) for t in range(1001)
    )
    # t = 500 is the one exact tie (τ = 511.5, midway between frames 15 and 16); the formula rounds half to even
    assert mel_frame_to_output_frame(500) == 16


def test_marker_in_mel_frame_moves_mostly_its_output_frame(small):
    """Perturb mel frame t of the normalised log-mel; the output frame that changes most is k(t)."""
    torch.manual_seed(1)
    base_mel = torch.randn(1, 1001, 64)
    ts = [t for t in range(0, 1001, 17) if t != 500] + [30, 31, 32, 499, 501, 999, 1000]
    with torch.no_grad():
        base = small.forward_mel(base_mel)
        for i in range(0, len(ts), 40):
            chunk = ts[i : i + 40]
            mel = base_mel.repeat(len(chunk), 1, 1)
            for j, t in enumerate(chunk):
                mel[j, t] += 5.0
            diff = (small.forward_mel(mel) - base).norm(dim=-1)  # [n, 32]
            got = diff.argmax(1).tolist()
            want = [mel_frame_to_output_frame(t) for t in chunk]
            assert got == want, list(zip(chunk, got, want, strict=True))


def test_window_partition_roundtrip():
    x = torch.randn(2, 16, 16, 3)
    w = window_partition(x, 8)
    assert w.shape == (2, 4, 64, 3)
    torch.testing.assert_close(w[0, 1, 0], x[0, 0, 8])  # window 1 = rows 0–7, cols 8–15 (row-major)
    torch.testing.assert_close(window_reverse(w, 8, 16, 16), x)


def test_relative_position_index_and_mask():
    idx = relative_position_index(8)
    assert idx.shape == (64, 64) and idx.min() == 0 and idx.max() == 224
    assert (idx.diagonal() == 112).all()  # (0,0) offset sits in the middle of the 15×15 table
    # token (0,0) vs (1,2): dh = -1, dw = -2 → (7-1)*15 + (7-2)
    assert idx[0, 1 * 8 + 2] == 6 * 15 + 5
    m = shifted_window_mask(64, 64, 8, 4)
    assert m.shape == (64, 64, 64)
    assert set(m.unique().tolist()) == {-100.0, 0.0}
    assert (m[0] == 0).all()  # interior window: one region
    assert (m[-1] == -100).any() and (m.diagonal(dim1=1, dim2=2) == 0).all()


def reference_window_attention(
    attn: WindowAttention, x: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Explicit Swin attention: fused qkv reshaped (N, 3, heads, hd); q·scale before q·kᵀ; + bias + mask."""
    b, nw, n, c = x.shape
    h = attn.heads
    xw = x.reshape(b * nw, n, c)
    qkv = attn.qkv(xw).reshape(b * nw, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (c // h) ** -0.5, qkv[1], qkv[2]
    a = q @ k.transpose(-2, -1)
    idx = attn.relative_position_index.view(-1)
    a = a + attn.relative_position_bias_table[idx].view(n, n, h).permute(2, 0, 1)[None]
    if mask is not None:
        a = a.view(b, nw, h, n, n) + mask[None, :, None]
        a = a.view(b * nw, h, n, n)
    out = (a.softmax(-1) @ v).transpose(1, 2).reshape(b * nw, n, c)
    return attn.proj(out).view(b, nw, n, c)


@pytest.mark.parametrize("masked", [False, True])
def test_fused_attention_equals_explicit_swin_attention(masked):
    torch.manual_seed(0)
    attn = WindowAttention(32, 4, 8)
    torch.nn.init.normal_(attn.relative_position_bias_table, std=1.0)
    x = torch.randn(2, 4, 64, 32)
    mask = shifted_window_mask(16, 16, 8, 4) if masked else None
    torch.testing.assert_close(attn(x, mask), reference_window_attention(attn, x, mask), rtol=1e-4, atol=1e-5)


def test_patch_merging_order():
    pm = PatchMerging(1)
    x = torch.arange(16.0).view(1, 4, 4, 1)
    with torch.no_grad():
        pm.norm.weight.fill_(1), pm.norm.bias.zero_()
    cat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    assert cat[0, 0, 0].tolist() == [0.0, 4.0, 1.0, 5.0]
    torch.testing.assert_close(pm(x), pm.reduction(pm.norm(cat)))


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return HTSAT(HTSAT_PRESETS["base"]).eval()


def test_base_layout_matches_published_keys(base):
    m = base
    keys = set(m.state_dict())
    shifted = {n for n, b in m.named_buffers() if n.endswith("attn_mask") and b is not None}
    want = {"layers.0.blocks.1.attn_mask", "layers.1.blocks.1.attn_mask"} | {
        f"layers.2.blocks.{i}.attn_mask" for i in (1, 3, 5, 7, 9, 11)
    }
    assert shifted == want  # none in layer 3 (resolution == window)
    assert "layers.2.blocks.11.attn.relative_position_bias_table" in keys
    assert (
        "layers.2.downsample.reduction.weight" in keys and "layers.3.downsample.reduction.weight" not in keys
    )
    for k in ("patch_embed.proj.weight", "patch_embed.norm.bias", "norm.weight", "bn0.running_var",
              "layers.0.blocks.0.attn.qkv.weight", "layers.0.blocks.0.mlp.fc2.bias", "layers.1.downsample.norm.weight"):  # fmt: skip
        assert k in keys
    pat = re.compile(r"^(bn0|patch_embed|norm|layers\.\d\.(blocks\.\d+\.(norm1|norm2|attn\.(qkv|proj)|"
                     r"attn\.relative_position_bias_table|mlp\.fc1|mlp\.fc2)|downsample\.(reduction|norm)))\b")  # fmt: skip
    assert all(pat.match(k) for k in keys), [k for k in keys if not pat.match(k)]
    assert m.state_dict()["layers.3.blocks.0.attn.qkv.weight"].shape == (3072, 1024)
    assert m.layers[3].blocks[1].shift == 0 and m.layers[2].blocks[1].shift == 4
    n_params = sum(p.numel() for p in m.parameters())
    assert 60e6 < n_params < 75e6  # HTSAT-base (embed 128, 2-2-12-2) ≈ 68 M


@pytest.mark.parametrize("name,dim", [("tiny", 768), ("base", 1024)])
def test_presets_output_32_frames(name, dim, base):
    torch.manual_seed(0)
    m = base if name == "base" else HTSAT(HTSAT_PRESETS[name]).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 480000) * 0.1)
    assert out.shape == (1, 32, dim) and torch.isfinite(out).all()


def test_bad_input_shape(small):
    with pytest.raises(ValueError, match="480000"):
        small(torch.randn(1, 1000))


def test_training_mode_is_stochastic_eval_is_not(small):
    wave = torch.randn(1, 480000) * 0.1
    with torch.no_grad():
        a, b = small(wave), small(wave)
    assert torch.equal(a, b)
    small.train()
    try:
        torch.manual_seed(3)
        c = small(wave)  # SpecAugment + DropPath active
        c.sum().backward()
    finally:
        small.eval()
    assert not torch.allclose(a, c)
    assert all(p.grad is not None for p in small.parameters() if p.requires_grad)
    small.zero_grad(set_to_none=True)


def test_grad_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    m = HTSAT(HTSAT_PRESETS["small"]).train()
    x = torch.randn(1, 480000) * 0.1
    grads = []
    for ckpt in (False, True):
        m.set_grad_checkpointing(ckpt)
        torch.manual_seed(1)  # same SpecAugment / DropPath draws
        m(x).square().sum().backward()
        grads.append(m.layers[0].blocks[1].attn.qkv.weight.grad.clone())
        m.zero_grad(set_to_none=True)
    torch.testing.assert_close(grads[0], grads[1])
