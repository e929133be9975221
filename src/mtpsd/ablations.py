"""The paper's ablations (method.md sections 3-4) as properties of a run's config.

A run *is* an ablation because of the options it sets, not because of its name:

    ablation_of(cfg)   # "reference" | "gt" | "soft" | "bda" | "static_k" | "prefix" | "magpie" | "gt+bda"
    ablation_key(cfg)  # runs with the same key were trained alike apart from the ablated option

Each ablation is one option away from the paper's main recipe (hard teacher, causal masks,
random k, no prefix loss, MetaMathQA/synthetic data). ``PAPER_VARIANT`` names each one's
rows in ``paper_results.csv`` (tables ``abl-l3-suprv-evals-pt1/pt2``, ``abl-l3-data-evals``),
``"main"`` for the reference. ``CLAIMS`` are the paper's ablation claims as directions
of the accuracy difference (ablation minus reference) at matched effective k; the report
(``mtpsd.reporting.ablation_report``) reads the paper's direction off its rows and checks ours.

Light on purpose (no pandas/torch): the workflow and summarize call it on plain dicts.
"""

from __future__ import annotations

import json
from typing import Any

REFERENCE = "reference"
# our name -> the paper's variant name in paper_results.csv
PAPER_VARIANT = {
    REFERENCE: "main",
    "gt": "GT Suprv.",
    "soft": "Soft Teacher",
    "bda": "BDA",
    "static_k": "Static k",
    "prefix": "Prefix Loss",
    "magpie": "FT Magpie",
}
LABELS = {
    REFERENCE: "reference (hard teacher)",
    "gt": "GT supervision",
    "soft": "soft teacher",
    "bda": "bidirectional masks (BDA)",
    "static_k": "Static k training",
    "prefix": "prefix (NTP) loss",
    "magpie": "Magpie data",
}
# the option each ablation sets, as (section, key, value)
OPTIONS = {
    "gt": ("train", "teacher_mode", "gt"),
    "soft": ("train", "teacher_mode", "soft"),
    "bda": ("train", "attention", "bidirectional"),
    "static_k": ("train", "random_k", False),
    "prefix": ("train", "prefix_loss", True),
    "magpie": ("data", "source", "magpie"),
}
# config keys that must agree for two runs to be compared (the training recipe apart from
# the ablated options and the data: the Magpie ablation changes N and the batch with its data)
_KEY_FIELDS = {
    "seed": None,
    "model": ("name", "source", "pretrained"),
    "train": ("k_max", "lr", "warmup_steps", "steps", "seed"),
}


def _get(cfg: dict, section: str, key: str) -> Any:
    return (cfg.get(section) or {}).get(key)


def _as_dict(cfg) -> dict:
    return cfg if isinstance(cfg, dict) else cfg.to_dict()


def ablations_of(cfg) -> list[str]:
    """Every ablation option a config (a ``Config`` or its dict) sets, in ``OPTIONS`` order."""
    cfg = _as_dict(cfg)
    return [name for name, (section, key, value) in OPTIONS.items() if _get(cfg, section, key) == value]


def ablation_of(cfg) -> str:
    """``"reference"`` when no ablation option is set, else their names joined by ``+``."""
    names = ablations_of(cfg)
    return "+".join(names) if names else REFERENCE


def ablation_key(cfg) -> str:
    """JSON of the recipe fields two compared runs share (base model, seed, k_max, lr,
    warm-up, steps, training seed): an ablation run is compared with the reference run of
    the same key."""
    cfg = _as_dict(cfg)
    out = {}
    for section, keys in _KEY_FIELDS.items():
        if keys is None:
            out[section] = cfg.get(section)
        else:
            out[section] = {k: _get(cfg, section, k) for k in keys}
    return json.dumps(out, sort_keys=True)
