"""Eval section: lm-evaluation-harness tasks and limits (method.md section 7)."""

from __future__ import annotations

from dataclasses import dataclass

from mtpsd.config.base import check, field


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=lambda: ["mtpsd_synth_math"], help="lm-eval task names")
    limit: int | None = field(None, help="documents per task (null = all)")
    batch_size: int = field(1, help="prompts decoded together")
    checkpoint_steps: list[int] = field(
        default_factory=list, help="intermediate checkpoints to evaluate (training-dynamics figure)"
    )

    def __post_init__(self):
        check(self.limit is None or self.limit > 0, "limit", "must be > 0")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
