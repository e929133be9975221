"""Task metrics for evaluation (method.md section 7): answer extraction, ROUGE,
diversity and repetition of generations, perplexity under the frozen base model.

Per-document functions are pure and called from the lm-eval task hooks
(``mtpsd/eval_tasks/utils.py``) or from :mod:`mtpsd.evaluation.evaluate` after a run.

Definitions (``w_1..w_L`` the word tokens of one generation, ``G_n`` its list of
``L - n + 1`` word n-grams):

- ``distinct_n = |set(G_n)| / |G_n|`` (Li et al., 2016, per generation);
- ``rep_n = 1 - distinct_n``: the share of n-grams already seen earlier in the same
  generation ("seq-rep-n", Welleck et al., 2019);
- ROUGE-L F1 = ``(1 + b^2) P R / (R + b^2 P)`` with ``b = 1``, ``P = LCS / |pred|``,
  ``R = LCS / |ref|`` on Porter-stemmed lowercase tokens (rouge-score, as lm-eval's
  cnn_dailymail task);
- perplexity of a generation ``y_1..y_T`` given its prompt ``x`` under the base model:
  ``exp(-1/T sum_t log p(y_t | x, y_<t))``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

# The answer filters of lm-eval's gsm8k_cot (strict, flexible) and of our synthetic
# task (strict "#### N"); the task YAMLs use the same patterns (tests compare them).
GSM8K_STRICT = r"The answer is (\-?[0-9\.\,]+)."
HASH_STRICT = r"#### (\-?[0-9\.\,]+)"
FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
# lm-eval's exact_match settings of gsm8k: these are removed before comparing.
_IGNORE = [",", r"\$", r"(?s).*#### ", r"\.$"]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _first_group(match: tuple | str) -> str:
    if isinstance(match, tuple):
        return next((m for m in match if m), "")
    return match


def extract_answer(text: str, mode: str = "flexible", *, strict_pattern: str = GSM8K_STRICT) -> str | None:
    """The answer string lm-eval's filters take from a generation, or None.

    ``mode="strict"``: first match of ``strict_pattern``; ``"flexible"``: the last
    number-like match of :data:`FLEXIBLE` (``group_select: -1``).
    """
    if mode == "strict":
        found = re.findall(strict_pattern, text)
        return _first_group(found[0]) if found else None
    if mode == "flexible":
        found = re.findall(FLEXIBLE, text)
        return _first_group(found[-1]) if found else None
    raise ValueError(f"mode must be 'strict' or 'flexible', got {mode!r}")


def normalize_number(text: str) -> str:
    """Apply lm-eval's gsm8k exact_match normalisation (commas, $, trailing dot, case)."""
    for pattern in _IGNORE:
        text = re.sub(pattern, "", text)
    return text.strip().lower()


def answer_correct(generation: str, target: str, mode: str = "flexible", *,
                   strict_pattern: str = GSM8K_STRICT) -> bool:
    """Whether the extracted answer equals ``target`` after normalisation."""
    got = extract_answer(generation, mode, strict_pattern=strict_pattern)
    return got is not None and normalize_number(got) == normalize_number(target)


def word_tokens(text: str) -> list[str]:
    """Lowercase word tokens (letters/digits, with an apostrophe suffix such as "don't")."""
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens: Sequence[str], n: int) -> float:
    """Unique n-grams / n-grams of one generation; 0.0 when it has no n-gram."""
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(tokens: Sequence[str], n: int = 4) -> float:
    """Share of n-grams that repeat an earlier n-gram of the same generation (0 = none)."""
    grams = ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F1 (keys ``rouge1``, ``rouge2``, ``rougeL``), whitespace-normalised."""
    pred = re.sub(r"\s+", " ", prediction).strip()
    ref = re.sub(r"\s+", " ", reference).strip()
    scores = _scorer().score(ref, pred)
    return {k: float(v.fmeasure) for k, v in scores.items()}


def rouge_l(prediction: str, reference: str) -> float:
    return rouge(prediction, reference)["rougeL"]


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error ``sd / sqrt(n)`` (sample sd, ddof=1; se=nan for n<2)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return math.nan, math.nan
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, math.nan
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var / len(vals))


def generation_perplexity(model, tokenizer, prompts: Sequence[str], generations: Sequence[str]) -> list[float]:
    """Perplexity of each generation given its prompt under ``model`` (a causal LM).

    The prompt is tokenized as the evaluation did (``prompts.encode_context``: BOS when the
    tokenizer adds one, none added to a chat prompt that starts with it) and the generation
    without special tokens; one forward pass on
    ``[prompt; generation]`` (1, P+T) scores the T generation tokens. A generation with
    no token gets NaN.
    """
    import torch
    from tqdm.auto import tqdm

    from mtpsd.data.prompts import encode_context

    device = next(model.parameters()).device
    out: list[float] = []
    for prompt, gen in tqdm(list(zip(prompts, generations)), desc="perplexity", leave=False):
        ctx = encode_context(tokenizer, prompt)  # as lm-eval encoded it: one BOS at most
        tgt = tokenizer(gen, add_special_tokens=False)["input_ids"]
        if not tgt:
            out.append(math.nan)
            continue
        ids = torch.tensor([ctx + tgt], device=device)  # (1, P+T)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float()  # (P+T, V)
        logp = torch.log_softmax(logits[len(ctx) - 1:-1], dim=-1)  # (T, V): predicts tgt
        nll = -logp.gather(1, ids[0, len(ctx):, None]).mean()
        out.append(float(torch.exp(nll)))
    return out
