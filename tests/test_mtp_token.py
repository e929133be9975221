"""<MTP> token: reserved slot, padding row, resize; Gaussian init; plain from_pretrained reload."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mtpsd.errors import MtpsdError
from mtpsd.mtp_token import add_mtp_token, load_base, save_model_dir

from .conftest import make_tiny_llama


@pytest.fixture(scope="module")
def tiny_tok():
    from mtpsd.tokenizer_train import train_tokenizer

    texts = ["Tom has 3 apples and buys 4 more.", "How many pages are left?"] * 20
    return train_tokenizer(texts, vocab_size=300)


def _fresh(tok, rows=None, tie=False):
    import copy

    m = make_tiny_llama(rows or len(tok), hidden_size=32, dtype=torch.float32, tie=tie)
    m.config.mtp_token_id = None
    with torch.no_grad():  # pretrained-looking rows: known mean and spread per dimension
        w = m.get_input_embeddings().weight
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(5)) * 0.5 + 2.0)
    return m, copy.deepcopy(tok)


def test_reserved_slot_used(tiny_tok, tmp_path):
    m, tok = _fresh(tiny_tok)
    n = len(tok)
    tid = add_mtp_token(m, tok, seed=0)
    assert tid == tok.convert_tokens_to_ids("<|reserved_0|>") and len(tok) == n
    assert m.config.mtp_token_slot == "reserved"
    save_model_dir(m, tok, tmp_path / "ck")
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path / "ck")
    t2 = AutoTokenizer.from_pretrained(tmp_path / "ck")
    assert m2.config.mtp_token_id == tid and len(t2) == n
    assert torch.equal(m2.get_input_embeddings().weight, m.get_input_embeddings().weight)
    with pytest.raises(MtpsdError, match="already"):
        add_mtp_token(m2, t2)


def _no_reserved(tok):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(40)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="t2", pad_token="t0")


def test_padding_row_then_resize(tmp_path):
    tok = _no_reserved(None)
    m, tok = _fresh(tok, rows=48)  # 8 padding rows beyond the tokenizer
    tid = add_mtp_token(m, tok, seed=1)
    assert tid == 40 and m.config.mtp_token_slot == "padding-row"
    assert m.get_input_embeddings().weight.shape[0] == 48
    m, tok = _fresh(_no_reserved(None), rows=40)
    tid = add_mtp_token(m, tok, seed=1)
    assert tid == 40 and m.config.mtp_token_slot == "resized"
    assert m.get_input_embeddings().weight.shape[0] == 41
    assert m.get_output_embeddings().weight.shape[0] == 41
    save_model_dir(m, tok, tmp_path / "ck")
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path / "ck")
    assert AutoTokenizer.from_pretrained(tmp_path / "ck").convert_tokens_to_ids("<MTP>") == 40
    assert m2.config.mtp_token_id == 40


def test_init_statistics(tmp_path):
    """Rows drawn over many seeds have the per-dimension mean/std of the pretrained rows."""
    m0, _ = _fresh(_no_reserved(None), rows=40)
    ref = m0.get_input_embeddings().weight.detach()
    draws = []
    for seed in range(300):
        m, tok = _fresh(_no_reserved(None), rows=40)
        tid = add_mtp_token(m, tok, seed=seed)
        draws.append(m.get_input_embeddings().weight[tid].detach())
        if seed == 0:  # untied output row initialised too
            out_row = m.get_output_embeddings().weight[tid].detach()
            assert not torch.equal(out_row, torch.zeros_like(out_row))
    d = torch.stack(draws)  # (300, H)
    torch.testing.assert_close(d.mean(0), ref.mean(0), atol=0.1, rtol=0)
    torch.testing.assert_close(d.std(0), ref.std(0), atol=0.1, rtol=0.15)
    assert not torch.equal(draws[0], draws[1])


@pytest.mark.slow
def test_smollm2_gguf_import_add_reload(smollm2_gguf, tmp_path):
    torch.set_num_threads(1)
    from mtpsd.mtp_token import import_base

    info = import_base(str(smollm2_gguf), tmp_path / "base")
    assert info["architecture"] == "LlamaForCausalLM" and info["tokenizer_size"] == 49152
    m, tok = load_base(str(tmp_path / "base"))
    assert tok.eos_token == "<|im_end|>" and m.config.tie_word_embeddings
    tid = add_mtp_token(m, tok, seed=0)
    assert tid == 49152 and m.config.mtp_token_slot == "resized"
    save_model_dir(m, tok, tmp_path / "init")
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path / "init")
    assert m2.config.mtp_token_id == 49152
    assert torch.equal(m2.get_input_embeddings().weight[tid], m.get_input_embeddings().weight[tid])
    x = tok("What is 2 + 3?", return_tensors="pt")["input_ids"]
    with torch.no_grad():  # the pretrained model still works: old ids unchanged
        assert torch.equal(m2(x).logits[0, -1, :49152].argmax(), m(x).logits[0, -1, :49152].argmax())
