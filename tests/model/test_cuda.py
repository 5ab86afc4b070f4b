"""CUDA checks (`uv run pytest -m gpu`): inference and `model.detect` on a GPU give the CPU's numbers.

The model is built from configs only (HTSAT `small`, a 2-layer BERT with a small word-piece vocabulary written
here, random weights), so the test needs no downloaded or packaged weights on the GPU machine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model import FLAM, FLAMConfig, TextConfig
from model.config import HTSAT_PRESETS
from model.detect.__main__ import main as detect_main
from synth.audio import read_audio
from tests.model.detect_audio import CHICKENS, ROOSTER

pytestmark = pytest.mark.gpu
QUERIES = ["chickens clucking", "a rooster crowing", "silence"]
WORDS = "a an the chickens chicken clucking rooster crowing dog bark barking silence sound of in".split()


def tiny_text_encoder(folder) -> str:
    """config.json + vocab.txt of a 2-layer BERT: enough for AutoTokenizer and for building it from its config."""
    from transformers import AutoTokenizer, BertConfig

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = list(dict.fromkeys(specials + WORDS + letters + [f"##{c}" for c in letters]))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64).save_pretrained(str(folder))  # fmt: skip
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert len(tok) == len(vocab) and tok.tokenize("chickens clucking") == ["chickens", "clucking"]
    return str(folder)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> FLAM:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    text = tiny_text_encoder(tmp_path_factory.mktemp("text"))
    cfg = FLAMConfig(audio=HTSAT_PRESETS["small"], text=TextConfig(path=text, pooling="mean", hidden_size=32))
    return FLAM.from_config(cfg, text_weights=False).eval()


@pytest.fixture(autouse=True)
def no_tf32():
    """Full fp32 on both devices (TF32 convolutions would differ from the CPU by ~1e-3)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_frame_probabilities_on_cuda_equal_the_cpu(model):
    """A 2.4-s file and a 12.3-s one (two 10-s windows stitched), 48 kHz and 44.1 kHz: same probabilities."""
    out = {}
    for device in ("cpu", "cuda"):
        m = model.to(device)
        out[device] = [m.frame_probabilities(*_mono(path), QUERIES) for path in (ROOSTER, CHICKENS)]
    model.to("cpu")
    for a, b in zip(out["cpu"], out["cuda"], strict=True):
        assert a.shape == b.shape and a.shape[0] == len(QUERIES)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
        assert a.std() > 0  # not a constant: the comparison means something


def test_detect_cli_on_cuda_writes_the_cpu_results(model, tmp_path):
    """`python -m model.detect --device cuda` writes what `--device cpu` writes: per-frame probabilities and the
    segments cut from them (a segment may differ only where a frame sits within 1e-4 of the threshold)."""
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    records = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        args = [str(ROOSTER), str(CHICKENS), "--checkpoint", str(ckpt), "--out", str(out), "--device", device,
                "--no-plot", "--quiet", *[a for q in QUERIES for a in ("--query", q)]]  # fmt: skip
        assert detect_main(args) == 0
        docs = [json.loads(f.read_text()) for f in sorted(out.rglob("*.json"))]
        records[device] = {d["filename"]: d for d in docs if "probabilities" in d}
    assert sorted(records["cpu"]) == sorted(records["cuda"]) and len(records["cpu"]) == 2
    for name, a in records["cpu"].items():
        b = records["cuda"][name]
        assert list(a["probabilities"]) == QUERIES == list(b["probabilities"])
        for q in QUERIES:
            np.testing.assert_allclose(a["probabilities"][q], b["probabilities"][q], rtol=0, atol=1e-4)
        assert len(a["detections"]) == len(b["detections"])


def _mono(path):
    x, sr = read_audio(path)
    return x.T, sr
