"""Metrics on hand-made examples: ROUGE, distinct-n, repetition, answer extraction, perplexity."""

from __future__ import annotations

import math

import pytest

from mtpsd.evaluation import metrics as M


def test_word_tokens():
    assert M.word_tokens("Don't STOP, 42 times!\nok") == ["don't", "stop", "42", "times", "ok"]


def test_distinct_and_repetition():
    toks = ["a", "b", "a", "b"]
    assert M.distinct_n(toks, 1) == 0.5
    assert M.distinct_n(toks, 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert M.repetition_rate(toks, 2) == pytest.approx(1 / 3)
    assert M.repetition_rate(list("abcdefg"), 4) == 0.0
    assert M.repetition_rate(["x"] * 10, 4) == pytest.approx(6 / 7)  # 7 4-grams, 1 unique
    assert M.distinct_n([], 1) == 0.0 and M.repetition_rate(["a", "b"], 4) == 0.0
    with pytest.raises(ValueError):
        M.ngrams(toks, 0)


def test_rouge_l_hand_computed():
    assert M.rouge_l("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert M.rouge_l("dogs bark", "the cat sat") == 0.0
    # LCS = "the cat on the mat" = 5 of 6 tokens each side: P = R = F = 5/6
    assert M.rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # order matters for L but not for 1: reversed 3 tokens -> LCS 1
    r = M.rouge("c b a", "a b c")
    assert r["rouge1"] == pytest.approx(1.0) and r["rougeL"] == pytest.approx(1 / 3)
    assert M.rouge_l("running dogs", "run dog") == pytest.approx(1.0)  # Porter stemmer
    # P = 2/2, R = 2/4 -> F = 2PR/(P+R) = 2/3
    assert M.rouge_l("cat mat", "cat sat on mat") == pytest.approx(2 / 3)


@pytest.mark.parametrize("text, strict, flexible", [
    ("So 21 - 15 = 6. The answer is 6.", "6", "6."),  # "." is stripped by exact_match
    ("It costs $1,234. The answer is 1,234.", "1,234", "1,234."),
    ("He pays 5 x 3 = 15 dollars, so 23 - 15 = 8", None, "8"),
    ("no number here", None, None),
    ("The answer is -4.", "-4", "-4."),
])
def test_extract_gsm8k(text, strict, flexible):
    assert M.extract_answer(text, "strict") == strict
    assert M.extract_answer(text, "flexible") == flexible


def test_extract_hash_and_correctness():
    gen = "5 boxes hold 6 * 5 = <<6*5=30>>30 pens.\n#### 30"
    assert M.extract_answer(gen, "strict", strict_pattern=M.HASH_STRICT) == "30"
    assert M.extract_answer("30 pens", "strict", strict_pattern=M.HASH_STRICT) is None
    assert M.answer_correct(gen, "30", "strict", strict_pattern=M.HASH_STRICT)
    assert M.answer_correct("It costs $1,000.", "1000", "flexible")
    assert not M.answer_correct("The answer is 7.", "8", "strict")
    assert M.normalize_number("$1,000.") == "1000"
    with pytest.raises(ValueError):
        M.extract_answer("1", "loose")


def test_mean_se():
    m, se = M.mean_se([1.0, 2.0, 3.0])
    assert m == 2.0 and se == pytest.approx(1 / math.sqrt(3))
    m, se = M.mean_se([5.0])
    assert m == 5.0 and math.isnan(se)
    assert all(math.isnan(x) for x in M.mean_se([]))


def test_generation_perplexity_uniform_model_equals_vocab(tiny_llama):
    """Zero output weights -> uniform next-token distribution -> perplexity = V exactly."""
    import torch
    from tests.conftest import make_char_tokenizer

    tok = make_char_tokenizer()
    model = tiny_llama(64)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    ppl = M.generation_perplexity(model, tok, ["12 + 3 =", "ab"], [" 15", ""])
    assert ppl[0] == pytest.approx(64.0)
    assert math.isnan(ppl[1])  # empty generation


def test_generation_perplexity_matches_manual(tiny_llama):
    import torch
    from tests.conftest import make_char_tokenizer

    tok = make_char_tokenizer()
    model = tiny_llama(64, seed=3)
    ids = tok("q: 1+1")["input_ids"] + tok(" = 2", add_special_tokens=False)["input_ids"]
    n_ctx = len(tok("q: 1+1")["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    nll = -sum(logp[t - 1, ids[t]].item() for t in range(n_ctx, len(ids))) / (len(ids) - n_ctx)
    got = M.generation_perplexity(model, tok, ["q: 1+1"], [" = 2"])[0]
    assert got == pytest.approx(math.exp(nll), rel=1e-6)
