"""Tiny base model: tokenizer specials, LR schedule, a fast end-to-end pretrain smoke test."""

from __future__ import annotations

import json

import pytest

from mtpsd.config import resolve
from mtpsd.data.synthetic import generate_splits
from mtpsd.errors import MtpsdError
from mtpsd.pretrain import build_model, lr_at, pretrain_base
from mtpsd.tokenizer_train import RESERVED, train_tokenizer


def test_lr_schedule():
    assert lr_at(0, peak=1.0, warmup=10, total=100) == pytest.approx(0.1)
    assert lr_at(9, peak=1.0, warmup=10, total=100) == pytest.approx(1.0)
    assert lr_at(10, peak=1.0, warmup=10, total=100) == pytest.approx(1.0)
    assert lr_at(99, peak=1.0, warmup=10, total=100) == pytest.approx(0.1, abs=1e-3)


def test_tokenizer_specials_and_digits():
    tok = train_tokenizer(["Mia has 123 apples and 45 pears."] * 10, vocab_size=300)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert [tok.convert_tokens_to_ids(t) for t in RESERVED] == [3, 4, 5, 6]
    pieces = tok.convert_ids_to_tokens(tok("x 123", add_special_tokens=False)["input_ids"])
    assert [p for p in pieces if p.isdigit()] == ["1", "2", "3"]
    with pytest.raises(MtpsdError, match="vocab_size"):
        train_tokenizer(["a"], vocab_size=100)


def test_build_model_refuses_tokenizer_without_eos():
    tok = train_tokenizer(["a b c"] * 5, vocab_size=300)
    tok.eos_token = None
    cfg = resolve({"run_names": ["t"], "runs": {"t": {}}})
    with pytest.raises(MtpsdError, match="no EOS token"):
        build_model(cfg.model.tiny, tok, seed=0)


def test_pretrain_smoke_saves_loadable_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    cfg = resolve({
        "run_names": ["t"], "runs": {"t": {}},
        "model": {"tiny": {"vocab_size": 400, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                           "intermediate_size": 64},
                  "pretrain": {"steps": 4, "batch_size": 4, "max_length": 64, "warmup_steps": 1,
                               "eval_max_new_tokens": 8}},
    })
    s = generate_splits(100, 10, 4, seed=0)
    m = pretrain_base(cfg, s["train"], s["validation"], s["test"], tmp_path / "tiny")
    assert m["steps"] == 4 and len(m["loss_curve"]) == 4 and m["test_n"] == 4
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["validation_loss"] > 0
    saved = json.loads((tmp_path / "tiny" / "base_metrics.json").read_text())
    assert saved["provenance"]["seed"] == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    assert model.config.vocab_size == len(tok) and tok.eos_token == "<|eos|>"
    assert tok.padding_side == "left" and "<|reserved_0|>" in tok.all_special_tokens
    assert model.config.eos_token_id == tok.eos_token_id
