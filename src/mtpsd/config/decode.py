"""Decode section: decoding strategies and sweeps (method.md section 6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mtpsd.config.base import check, field


@dataclass
class DecodeConfig:
    static_k: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5], help="Static-k sweep")
    confadapt_tau: list[float] = field(
        default_factory=lambda: [0.995, 0.99, 0.98, 0.97, 0.96, 0.95, 0.9, 0.87, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6],
        help="ConfAdapt thresholds",
    )
    k_max: int | None = field(
        None, help="largest chunk for ConfAdapt; null = train.k_max (mask positions beyond it are untrained)"
    )
    verify_k: int = field(4, help="proposal length of the lossless self-verify mode; 0 = off")
    max_new_tokens: int = field(256, help="generation budget")
    settings: list[str] = field(
        default_factory=lambda: ["static-k1", "confadapt-tau0.9"],
        help="settings `mtpsd decode` writes per run (results/runs/{run}/decode/{setting}.jsonl)",
    )
    engine: Literal["auto", "graphs", "eager", "reference"] = field(
        "auto", help="decoder: graphs (DecodeEngine with CUDA graphs), eager (the same engine without graphs: "
                     "the way out when a GPU-only step fails), reference (DynamicCache, prompt by prompt: slow); "
                     "auto = the environment's MTPSD_ENGINE, else graphs on CUDA and eager elsewhere",
    )
    convention: Literal["project", "authors"] = field(
        "project", help="decoding conventions: project (<MTP> and vocabulary padding rows banned, ConfAdapt "
                        "p > tau in float32, stop strings / end ids / the budget cut the last chunk) or authors "
                        "(the authors' public decoding code: full vocabulary, p >= tau in the model's dtype, stop "
                        "strings only cut the text afterwards, an end id keeps the rest of its chunk, decoding "
                        "ends once fewer than k budget slots remain). Every result reports effective k both "
                        "ways (eff_k_project, eff_k_authors); the convention picks tokens, text and eff_k",
    )
    speed_prompts: int | None = field(
        None, help="prompts of the batch-1 speed runs (`mtpsd decode`, the decode rule): the first N test "
                   "prompts, the same fixed subset for every setting (null: all). Accuracy comes from the "
                   "evaluate rule, batched (eval.batch_size)",
    )

    def __post_init__(self):
        check(all(k >= 1 for k in self.static_k), "static_k", "every k must be >= 1")
        check(all(0.0 < t < 1.0 for t in self.confadapt_tau), "confadapt_tau", "every tau must be in (0, 1)")
        check(self.k_max is None or self.k_max >= 1, "k_max", "must be >= 1")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        check(self.speed_prompts is None or self.speed_prompts >= 1, "speed_prompts", "must be >= 1 or null")
        from mtpsd.errors import MtpsdError
        from mtpsd.settings import parse_setting

        for s in self.settings:
            try:
                parse_setting(s)
            except MtpsdError as e:
                check(False, "settings", str(e))
