"""Single-process checks of the FLAM losses against hand-worked numbers and explicit loops."""

import math

import pytest
import torch

from model.loss import (
    LOGIT_SCALE_INIT,
    LOGIT_SCALE_MAX,
    LossWeights,
    clip_logit_scale,
    clip_loss,
    prior_loss,
    sed_and_prior_loss,
    sed_logits,
    sed_pair_loss,
    sed_targets,
    total_loss,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def naive_sed_prior(frames, texts, alpha, beta, text_ids, text_mask, event_ids, event_frames):
    """Explicit-loop reference of the issue #4 semantics (first slot of an id represents it)."""
    rep = {}
    for k in range(len(text_ids)):
        if text_mask[k] and int(text_ids[k]) not in rep:
            rep[int(text_ids[k])] = k
    n_clips, n_frames, _ = frames.shape
    if not rep:
        return 0.0, 0.0
    sed, prior = 0.0, 0.0
    for tid, k in rep.items():
        positives = 0
        for b in range(n_clips):
            for fr in range(n_frames):
                z = -1
                for e in range(event_ids.shape[1]):
                    if int(event_ids[b, e]) == tid and bool(event_frames[b, e, fr]):
                        z = 1
                positives += z == 1
                h = float(alpha[k]) * float(frames[b, fr] @ texts[k]) + float(beta[k])
                sed += softplus(-z * h)
        share = positives / (n_clips * n_frames)
        x = float(beta[k])
        prior += softplus(x) - share * x  # BCE with logits
    return sed / (n_clips * len(rep) * n_frames), prior / len(rep)


def hand_example():
    frames = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)  # B=1, L=2, D=2
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    alpha = torch.tensor([2.0, 1.0, 5.0], dtype=torch.float64)
    beta = torch.tensor([0.0, -1.0, 3.0], dtype=torch.float64)
    text_ids = torch.tensor([10, 20, 10])  # slot 2 duplicates id 10: slot 0 represents it
    text_mask = torch.tensor([True, True, True])
    event_ids = torch.tensor([[10, -1]])
    event_frames = torch.tensor([[[True, False], [True, True]]])  # event "10" active in frame 0
    return frames, texts, alpha, beta, text_ids, text_mask, event_ids, event_frames


def test_sed_and_prior_hand_example():
    inputs = [t.requires_grad_() if t.is_floating_point() else t for t in hand_example()]
    l_sed, l_prior = sed_and_prior_loss(*inputs)
    # h = α⟨f,t⟩+β: (text 10, frame 0) = 2, z=+1; (10, 1) = 0, z=-1; (20, 0) = -1, z=-1; (20, 1) = 0, z=-1
    expected_sed = (softplus(-2.0) + math.log(2) + softplus(-1.0) + math.log(2)) / 4
    # shares: text 10 → 1/2, text 20 → 0; BCE(0, 1/2) = log 2, BCE(-1, 0) = softplus(-1)
    expected_prior = (math.log(2) + softplus(-1.0)) / 2
    assert l_sed.item() == pytest.approx(expected_sed, abs=1e-12)
    assert l_prior.item() == pytest.approx(expected_prior, abs=1e-12)
    (l_sed + l_prior).backward()
    frames, texts, alpha, beta = inputs[:4]
    # duplicate slot 2 is not the representative: zero gradients
    assert texts.grad[2].abs().sum() == 0 and alpha.grad[2] == 0 and beta.grad[2] == 0
    # dl_prior/dβ_k = (σ(β_k) − share_k) / |U|
    assert beta.grad[0].item() == pytest.approx((0.5 - 0.5) / 2, abs=1e-12)
    assert beta.grad[1].item() == pytest.approx((1 / (1 + math.e)) / 2, abs=1e-12)
    # dl_sed/dα_0 = Σ_l (σ(h) − y)·s / 4: frame 0: (σ(2) − 1)·1, frame 1: s = 0
    assert alpha.grad[0].item() == pytest.approx((1 / (1 + math.exp(-2)) - 1) / 4, abs=1e-12)


def test_beta_gradient_zero_through_sed_not_prior():
    frames, texts, alpha, beta, *rest = hand_example()
    beta.requires_grad_()
    texts.requires_grad_()
    l_sed, l_prior = sed_and_prior_loss(frames, texts, alpha, beta, *rest)
    (g_sed,) = torch.autograd.grad(l_sed, beta, retain_graph=True, allow_unused=True)
    assert g_sed is None or g_sed.abs().sum() == 0
    (g_prior,) = torch.autograd.grad(l_prior, beta)
    assert g_prior.abs().sum() > 0
    # the building block detaches β as well
    b = torch.tensor([0.5], requires_grad=True)
    h = sed_logits(torch.ones(1, 1, 1), torch.ones(1, 1), torch.ones(1), b)
    assert not h.requires_grad


def random_case(seed, dtype=torch.float64, n_clips=4, n_slots=7, n_frames=5, dim=3, n_events=3):
    g = torch.Generator().manual_seed(seed)
    frames = torch.nn.functional.normalize(
        torch.randn(n_clips, n_frames, dim, generator=g, dtype=dtype), dim=-1
    )
    texts = torch.nn.functional.normalize(torch.randn(n_slots, dim, generator=g, dtype=dtype), dim=-1)
    alpha = torch.rand(n_slots, generator=g, dtype=dtype) * 10 + 0.5
    beta = torch.randn(n_slots, generator=g, dtype=dtype) * 2
    text_ids = torch.randint(0, 5, (n_slots,), generator=g) + 100
    text_mask = torch.rand(n_slots, generator=g) < 0.8
    event_ids = torch.randint(0, 6, (n_clips, n_events), generator=g) + 100  # 105: no slot
    event_ids[torch.rand(n_clips, n_events, generator=g) < 0.3] = -1
    event_frames = torch.rand(n_clips, n_events, n_frames, generator=g) < 0.4
    return frames, texts, alpha, beta, text_ids, text_mask, event_ids, event_frames


@pytest.mark.parametrize("seed", range(6))
def test_sed_and_prior_match_explicit_loops(seed):
    inputs = random_case(seed)
    l_sed, l_prior = sed_and_prior_loss(*inputs)
    ref_sed, ref_prior = naive_sed_prior(*inputs)
    assert l_sed.item() == pytest.approx(ref_sed, abs=1e-12)
    assert l_prior.item() == pytest.approx(ref_prior, abs=1e-12)


def test_recompute_and_impls_agree_single_process():
    base = random_case(3)
    grads = []
    for impl, recompute in [("ring", True), ("ring", False), ("bidir", True), ("gather", False)]:
        inputs = [t.clone().requires_grad_() if t.is_floating_point() else t for t in base]
        l_sed, l_prior = sed_and_prior_loss(*inputs, impl=impl, recompute=recompute)
        (l_sed + l_prior).backward()
        grads.append([t.grad for t in inputs[:4]])
    for other in grads[1:]:
        for a, b in zip(grads[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_building_blocks():
    ids = torch.tensor([7, 8])
    y = sed_targets(torch.tensor([[8, -1, 8]]), torch.tensor([[[1, 0, 0], [1, 1, 1], [0, 0, 1]]]).bool(), ids)
    assert y.tolist() == [[[0, 0, 0], [1, 0, 1]]]  # id 8 twice in the clip: union of frames, −1 ignored
    assert sed_pair_loss(torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(2))
    assert prior_loss(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0]), "mean").item() == pytest.approx(
        math.log(2)
    )


def test_empty_masks_give_zero_without_nan():
    frames, texts, alpha, beta, text_ids, _, event_ids, event_frames = random_case(1)
    texts = texts.clone()
    texts[0] = float("nan")  # padding garbage must not leak
    leaves = [t.clone().requires_grad_() for t in (frames, texts, alpha, beta)]
    mask = torch.zeros(len(text_ids), dtype=torch.bool)
    l_sed, l_prior = sed_and_prior_loss(*leaves, text_ids, mask, event_ids, event_frames)
    assert l_sed.item() == 0 and l_prior.item() == 0
    (l_sed + l_prior).backward()
    for t in leaves:
        assert t.grad is not None and torch.equal(t.grad, torch.zeros_like(t))


def test_nan_in_padding_slot_does_not_leak():
    frames, texts, alpha, beta, text_ids, mask, event_ids, event_frames = random_case(2)
    mask = mask.clone()
    mask[1] = False
    texts, alpha = texts.clone(), alpha.clone()
    texts[1], alpha[1] = float("nan"), float("nan")
    l_sed, l_prior = sed_and_prior_loss(frames, texts, alpha, beta, text_ids, mask, event_ids, event_frames)
    assert torch.isfinite(l_sed) and torch.isfinite(l_prior)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.__setitem__(0, a[0][:, :, :2]), "texts dim"),
        (lambda a: a.__setitem__(4, a[4].int()), "int64"),
        (lambda a: a.__setitem__(7, a[7][:, :, :2]), "event_frames must be"),
        (lambda a: a.__setitem__(2, a[2][:3]), "alpha must be"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, message):
    args = list(random_case(0))
    change(args)
    with pytest.raises(ValueError, match=message):
        sed_and_prior_loss(*args)
    with pytest.raises(ValueError, match="impl"):
        sed_and_prior_loss(*random_case(0), impl="tree")


def naive_clip(audio, text, scale):
    n = len(audio)
    total = 0.0
    for i in range(n):
        la = [scale * float(audio[i] @ text[j]) for j in range(n)]
        lt = [scale * float(text[i] @ audio[j]) for j in range(n)]
        total += (math.log(sum(map(math.exp, la))) - la[i]) / 2
        total += (math.log(sum(map(math.exp, lt))) - lt[i]) / 2
    return total / n


def test_clip_loss_hand_example_and_clamp():
    eye = torch.eye(2, dtype=torch.float64)
    loss = clip_loss(eye, eye, clip_logit_scale(torch.tensor(math.log(2.0), dtype=torch.float64)))
    assert loss.item() == pytest.approx(softplus(-2.0), abs=1e-12)  # −log(e²/(e²+1)) both ways
    assert LOGIT_SCALE_INIT == pytest.approx(math.log(1 / 0.07))
    big = torch.tensor(math.log(1000.0), dtype=torch.float64, requires_grad=True)
    capped = clip_loss(eye, eye, clip_logit_scale(big))
    assert capped.item() == pytest.approx(softplus(-100.0), abs=1e-12)  # scale clamped to e^LOGIT_SCALE_MAX
    capped.backward()
    assert big.grad == 0 and math.exp(LOGIT_SCALE_MAX) == pytest.approx(100.0)


def test_clip_loss_matches_loops():
    g = torch.Generator().manual_seed(5)
    audio = torch.nn.functional.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=-1)
    value = clip_loss(audio, text, clip_logit_scale(torch.tensor(LOGIT_SCALE_INIT, dtype=torch.float64)))
    assert value.item() == pytest.approx(naive_clip(audio, text, 1 / 0.07), abs=1e-10)


def test_total_loss_weights():
    parts = torch.tensor(0.5), torch.tensor(0.01), torch.tensor(0.2)
    assert LossWeights() == LossWeights(clip=1.0, sed=200.0, prior=1.0)
    assert total_loss(*parts).item() == pytest.approx(0.5 + 2.0 + 0.2)
    assert total_loss(*parts, LossWeights(sed=0.0)).item() == pytest.approx(0.7)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    base = random_case(4)
    out = {}
    for device in ("cpu", "cuda"):
        inputs = [t.to(device) for t in base]
        leaves = [t.clone().requires_grad_() for t in inputs[:4]]
        l_sed, l_prior = sed_and_prior_loss(*leaves, *inputs[4:])
        (l_sed + l_prior).backward()
        out[device] = [l_sed.detach().cpu(), l_prior.detach().cpu()] + [t.grad.cpu() for t in leaves]
    for a, b in zip(out["cpu"], out["cuda"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
