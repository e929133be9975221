"""Eval section: lm-evaluation-harness tasks and limits (method.md section 7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mtpsd.config.base import check, field


@dataclass
class EvalConfig:
    tasks: list[str] = field(
        default_factory=lambda: ["mtpsd_synth_math"],
        help="lm-eval task names: ours (mtpsd_*) or the paper's general evaluations through lm-eval's "
             "own tasks (aime25, gpqa_main_cot_n_shot, bbh_cot_fewshot, ifeval)",
    )
    dtype: Literal["auto", "float32", "bfloat16"] | None = field(
        None, help="dtype of the accuracy evaluations (the paper's: float32); null = model.dtype. "
                   "The batch-1 speed runs (decode rule) stay in model.dtype",
    )
    max_gen_toks: dict[str, int] = field(
        default_factory=dict,
        help="task -> generation budget in tokens, replacing the task's own (its YAML's max_gen_toks, "
             "else decode.max_new_tokens)",
    )
    limit: int | None = field(None, help="documents per task (null = all)")
    batch_size: int | None = field(
        None, help="prompts decoded together; null = per task, the largest batch the evaluation memory plan "
                   "fits on the device (mtpsd.evaluation.memory_plan; `mtpsd plan-memory --eval` prints it)",
    )
    checkpoint_steps: list[int] = field(
        default_factory=list, help="intermediate checkpoints to evaluate (training-dynamics figure)"
    )
    data_files: dict[str, str] = field(
        default_factory=dict,
        help="task -> local JSONL to evaluate on instead of the task's hub dataset "
             "(e.g. mtpsd_gsm8k_cot: data/gsm8k/test.jsonl)",
    )
    checkpoint_settings: list[str] = field(
        default_factory=lambda: ["static-k1", "confadapt-tau0.9"],
        help="decoding settings evaluated on intermediate checkpoints (checkpoint_steps)",
    )
    confidence_prefixes: int = field(
        200, help="validation prefixes scored for the confidence-vs-quality analysis (figure 6)"
    )
    max_logged_samples: int = field(
        2000, help="keep lm-eval's per-document samples in the result JSON up to this many documents"
    )

    def __post_init__(self):
        check(self.limit is None or self.limit > 0, "limit", "must be > 0")
        from mtpsd.evaluation.tasks import known_tasks

        unknown = [t for t in self.tasks if t not in known_tasks()]
        check(not unknown, "tasks", f"unknown task(s) {unknown}; known: {', '.join(known_tasks())}")
        check(all(isinstance(v, int) and v >= 1 for v in self.max_gen_toks.values()), "max_gen_toks",
              "values must be integers >= 1")
        check(all(t in known_tasks() for t in self.max_gen_toks), "max_gen_toks",
              f"keys must be task names ({', '.join(known_tasks())})")
        check(self.batch_size is None or self.batch_size >= 1, "batch_size", "must be >= 1 or null (planned)")
        check(all(s >= 0 for s in self.checkpoint_steps), "checkpoint_steps", "steps must be >= 0")
        check(all(isinstance(v, str) and v for v in self.data_files.values()), "data_files",
              "values must be file paths")
        check(self.confidence_prefixes >= 1, "confidence_prefixes", "must be >= 1")
        check(self.max_logged_samples >= 0, "max_logged_samples", "must be >= 0")
