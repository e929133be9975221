"""The paper's two main models, and which of our model names stand for them.

``paper_model("l3-8b-magpie")`` -> ``"L3.1-8B-Magpie"``: our runs of the paper's base models
and of the authors' published MTP checkpoints are compared with that model's rows of
``paper_results.csv`` (report tolerances, the plan's effective k). Light on purpose: the
workflow calls it while Snakemake parses.
"""

from __future__ import annotations

L3, QWEN = "L3.1-8B-Magpie", "Qwen3-4B-Inst-2507"
PAPER_MODELS = (L3, QWEN)


def paper_model(name: str | None) -> str | None:
    """The paper model a model name stands for (its own name, or ours: ``l3-8b-magpie``,
    ``L3-1-8B-Magpie-MTP``, ``qwen3-4b-inst-2507``, ...); None for any other model."""
    if name in PAPER_MODELS:
        return name
    low = (name or "").lower()
    if "qwen3-4b" in low:
        return QWEN
    if any(s in low for s in ("magpie", "l3-8b", "llama-3.1-8b", "l3-1-8b")):
        return L3
    return None
