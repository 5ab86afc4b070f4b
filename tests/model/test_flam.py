"""FLAM module: outputs for the trainer, paper initialisation, α/β heads, probability equations."""

import math

import pytest
import torch

from model.heads import approximate_probability, frame_similarity, unbiased_probability
from tests.model.small_flam import small_flam


@pytest.fixture(scope="module")
def model():
    return small_flam()


def test_paper_initialisation(model):
    assert model.fc_per_text_logit_scale[2].bias.item() == pytest.approx(math.log(10))
    assert model.fc_per_text_logit_bias[2].bias.item() == pytest.approx(-8.0)
    assert isinstance(model.fc_per_text_logit_scale[1], torch.nn.GELU)
    assert model.fc_per_text_logit_scale[1].approximate == "none"  # erf GELU
    assert model.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert model.aed_logit_scale.item() == 0.0
    assert model.fc_per_text_logit_scale[0].weight.shape == (384, 384)
    assert model.audio_projection[0].weight.shape == (512, 128) and isinstance(
        model.audio_projection[1], torch.nn.ReLU
    )
    assert model.text_projection[0].weight.shape == (512, 384)


def test_forward_outputs_for_trainer(model):
    wave = torch.randn(2, 480000) * 0.1
    enc = model.tokenize(["dog barking", "siren", "rain on a roof"])
    out = model(wave, enc["input_ids"], enc["attention_mask"])
    assert out.frames.shape == (2, 32, 512) and out.clip.shape == (2, 512) and out.texts.shape == (3, 512)
    assert out.alpha.shape == (3,) and out.beta.shape == (3,)
    for t in (out.frames, out.clip, out.texts):
        torch.testing.assert_close(t.norm(dim=-1), torch.ones(t.shape[:-1]))
    assert (out.alpha > 0).all() and out.alpha.mean().item() == pytest.approx(10, rel=0.5)
    assert out.beta.mean().item() == pytest.approx(-8, abs=1.0)
    loss = (out.frames.sum() + out.clip.sum() + out.texts.sum() + out.alpha.sum() + out.beta.sum()
            + out.logit_scale)  # fmt: skip
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    model.zero_grad(set_to_none=True)


def test_clip_is_projection_of_mean_frame_not_mean_of_projections(model):
    wave = torch.randn(1, 480000) * 0.1
    with torch.no_grad():
        feats = model.audio_features(wave)
        frames, clip = model.project_audio(feats)
        want = torch.nn.functional.normalize(model.audio_projection(feats.mean(1)), dim=-1)
        wrong = torch.nn.functional.normalize(frames.mean(1), dim=-1)
    torch.testing.assert_close(clip, want)
    assert not torch.allclose(clip, wrong, atol=1e-4)


def test_alpha_uses_exp_and_aed_scale(model):
    enc = model.tokenize(["dog"])
    with torch.no_grad():
        a0 = model.encode_text(**enc).alpha
        model.aed_logit_scale.fill_(math.log(2.0))
        a1 = model.encode_text(**enc).alpha
        model.aed_logit_scale.zero_()
    torch.testing.assert_close(a1, 2 * a0)


def test_aed_logit_scale_is_frozen(model, tmp_path):
    def frozen(m):
        return m.aed_logit_scale.requires_grad is False and m.aed_logit_scale.item() == 0.0

    assert frozen(model)  # from_config
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p is not model.aed_logit_scale for p in trainable)
    assert len(trainable) == len(list(model.parameters())) - 1  # everything else trains
    assert "aed_logit_scale" in model.state_dict()  # the checkpoint key stays
    model.train()
    model.requires_grad_(True)
    assert frozen(model)
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert frozen(model)
    state = {k: torch.nn.Parameter(v) if v.is_floating_point() else v for k, v in state.items()}
    assert state["aed_logit_scale"].requires_grad
    model.load_state_dict(state, assign=True)  # even a trainable Parameter in the state dict
    assert frozen(model)
    model.save_pretrained(tmp_path / "ck")
    back = type(model).from_pretrained(tmp_path / "ck")
    assert frozen(back.train())
    assert all(p is not back.aed_logit_scale for p in back.parameters() if p.requires_grad)


def test_probability_equations():
    torch.manual_seed(0)
    frames, texts = torch.randn(2, 32, 8), torch.randn(3, 8)
    alpha, beta = torch.tensor([1.0, 5.0, 20.0]), torch.tensor([-1.0, 0.5, -30.0])
    s = frame_similarity(frames, texts)
    assert s.shape == (2, 3, 32)
    fn = torch.nn.functional.normalize
    torch.testing.assert_close(s[1, 2, 7], fn(frames[1, 7], dim=0) @ fn(texts[2], dim=0))
    approx = approximate_probability(s, alpha)
    torch.testing.assert_close(approx[0, 1, 3], torch.sigmoid(5.0 * s[0, 1, 3]))
    unb = unbiased_probability(s, alpha, beta)
    p = torch.sigmoid(alpha[1] * s[0, 1, 3] + beta[1])
    torch.testing.assert_close(unb[0, 1, 3], p / (p + torch.sigmoid(beta[1])))
    # β ≪ 0: the unbiased form coincides with the approximate one
    torch.testing.assert_close(unb[:, 2], approx[:, 2], rtol=1e-4, atol=1e-6)
