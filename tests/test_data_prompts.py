"""Prompt formatting (chat template on/off), training-text encoding, answer extraction."""

from __future__ import annotations

import pytest
import torch

from mtpsd.data.prompts import (
    encode_example,
    encode_prompt,
    extract_answer,
    format_prompt,
    format_training_text,
)
from mtpsd.errors import MtpsdError
from mtpsd.layout import build_layout
from mtpsd.tokenizer_train import train_tokenizer

CHATML = ("{% for m in messages %}<|reserved_0|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|reserved_0|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tok():
    texts = ["Mia has 3 apples. How many apples?\n\nShe has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"] * 20
    return train_tokenizer(texts, vocab_size=300)


def test_chat_off(tok):
    q, a = "Mia has 3 apples. How many?", "She has 3 + 4 = <<3+4=7>>7.\n#### 7"
    assert format_prompt(tok, q, chat_template=False) == q + "\n\n"
    prompt = encode_prompt(tok, q, chat_template=False)
    ids = encode_example(tok, q, a, chat_template=False, max_length=512)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert ids[: len(prompt)] == prompt
    assert tok.decode(ids) == "<|bos|>" + q + "\n\n" + a + "<|eos|>"
    assert format_training_text(tok, q, a, chat_template=False) == q + "\n\n" + a + "<|eos|>"
    assert encode_example(tok, q, a, chat_template=False, max_length=5) == ids[:5]


def test_chat_on(tok):
    tok.chat_template = CHATML
    try:
        q, a = "What is 2 + 2?", "2 + 2 = <<2+2=4>>4\n#### 4"
        prompt = format_prompt(tok, q, chat_template=True)
        assert prompt == "<|reserved_0|>user\nWhat is 2 + 2?<|eos|>\n<|reserved_0|>assistant\n"
        ids = encode_example(tok, q, a, chat_template=True, max_length=512)
        assert ids[0] != tok.bos_token_id  # the template owns the start; no extra BOS
        assert ids[-1] == tok.eos_token_id
        assert tok.decode(ids) == prompt + a + "<|eos|>"
        # the user turn's end-of-turn is the EOS id too; the training layout must still
        # place regions in the answer and end the text at the final EOS
        n_prompt = len(encode_prompt(tok, q, chat_template=True))
        assert tok.eos_token_id in ids[: n_prompt]
        pos = torch.arange(0, len(ids) - 1, 2)[None]
        lay = build_layout(torch.tensor([ids]), pos, k=2, mtp_token_id=len(tok),
                           eos_token_id=tok.eos_token_id)
        kept = lay.regions_per_row[0]
        assert kept[-1] >= len(ids) - 3 and sum(p >= n_prompt for p in kept) >= len(a) // 8
        assert lay.targets_gt[0][lay.readout[0]][-1] == tok.eos_token_id
    finally:
        tok.chat_template = None
    with pytest.raises(MtpsdError, match="no chat template"):
        format_prompt(tok, "q", chat_template=True)


def test_tokenizer_without_eos_is_refused(tok):
    eos = tok.eos_token
    tok.eos_token = None
    try:
        with pytest.raises(MtpsdError, match="no EOS token"):
            encode_example(tok, "q", "a", chat_template=False, max_length=16)
    finally:
        tok.eos_token = eos


@pytest.mark.parametrize("text,expected", [
    ("a\n#### 18", "18"), ("#### 1,234", "1234"), ("#### $5", "5"), ("#### 7.0", "7"),
    ("#### 2.50", "2.5"), ("#### -3", "-3"), ("#### 1\nthen #### 2", "2"), ("The answer is 5", "5"),
    ("so 3.\nThe answer is: 1,000", "1000"), ("The answer is: 4\n#### 5", "5"), ("The answer is: x", None),
    ("#### 12.", "12"), ("####", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected
