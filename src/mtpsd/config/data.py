"""Data section: which training and test sets, where they come from, split sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mtpsd.config.base import check, field


@dataclass
class SyntheticConfig:
    """Generated grade-school math (GSM8K format) for the offline default."""

    n_train: int = field(20000, help="training problems")
    n_validation: int = field(200, help="validation problems")
    n_test: int = field(200, help="test problems (never share a template instance with train)")

    def __post_init__(self):
        for k in ("n_train", "n_validation", "n_test"):
            check(getattr(self, k) > 0, k, "must be > 0")


@dataclass
class DataConfig:
    source: Literal["synthetic", "metamathqa", "gsm8k", "magpie"] = field(
        "synthetic", help="training data: generated math, MetaMathQA, GSM8K train, or Magpie "
                          "(data.magpie_sources; the paper's data ablation)"
    )
    path: str | None = field(None, help="local JSON/JSONL file for the source; null = hub")
    test_source: Literal["synthetic", "gsm8k"] = field("synthetic", help="test set")
    test_path: str | None = field(None, help="local GSM8K-format JSONL for the test set; null = hub")
    validation_fraction: float = field(
        0.02, help="share of seed questions held out for validation (MetaMathQA/GSM8K)"
    )
    magpie_sources: list[str] = field(
        default_factory=lambda: ["Magpie-Align/Magpie-Pro-300K-Filtered", "Magpie-Align/Magpie-Reasoning-150K"],
        help="source: magpie: hub ids (split train) or local .json/.jsonl files with a 'conversations' "
             "field (ShareGPT turns); the paper's Magpie-Pro-300K + Magpie-Reasoning-150K",
    )
    max_train_examples: int | None = field(None, help="cap on training rows (null = all)")
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig, help="generator sizes")

    def __post_init__(self):
        check(0.0 < self.validation_fraction < 1.0, "validation_fraction", "must be in (0, 1)")
        check(len(self.magpie_sources) > 0, "magpie_sources", "must list at least one dataset")
        check(self.max_train_examples is None or self.max_train_examples > 0, "max_train_examples", "must be > 0")
