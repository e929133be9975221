"""``process_results`` hooks for the mtpsd lm-eval tasks (referenced as ``!function utils.x``).

The metric logic lives in :mod:`mtpsd.evaluation.metrics`; these functions only adapt lm-eval's
call convention ``process_results(doc, results) -> {metric: value}``, where
``results`` holds the (filtered) generations for one document.
"""

from __future__ import annotations

from mtpsd.evaluation.metrics import distinct_n, repetition_rate, rouge, word_tokens


def process_summary(doc: dict, results: list[str]) -> dict[str, float]:
    """ROUGE-1/2/L F1 of the generated summary against ``doc["highlights"]``."""
    scores = rouge(results[0], doc["highlights"])
    return {"rouge_l": scores["rougeL"], "rouge_1": scores["rouge1"], "rouge_2": scores["rouge2"]}


def process_story(doc: dict, results: list[str]) -> dict[str, float]:
    """Diversity and repetition of one generated story (no reference needed)."""
    words = word_tokens(results[0])
    return {
        "distinct_1": distinct_n(words, 1),
        "distinct_2": distinct_n(words, 2),
        "distinct_3": distinct_n(words, 3),
        "rep_4": repetition_rate(words, 4),
        "length_words": float(len(words)),
    }
