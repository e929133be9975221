"""Train section: self-distillation (method.md sections 3-4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mtpsd.config.base import check, field


@dataclass
class TrainConfig:
    k_max: int = field(16, help="largest k; k is drawn from [2, k_max] per region (paper: 16)")
    random_k: bool = field(True, help="draw k ~ U[2, k_max] per micro-batch (one forward shares k); false = 'Static k' ablation (k = k_max)")
    max_length: int = field(160, help="tokens per training text N (paper: 160)")
    num_regions: int | None = field(None, help="MTP regions per sequence M; null = N / (2 k_max)")
    teacher_mode: Literal["hard", "soft", "gt"] = field("hard", help="distillation target")
    attention: Literal["causal", "bidirectional"] = field("causal", help="mask tokens inside a region")
    prefix_loss: bool = field(False, help="add NTP loss on ground-truth positions (ablation)")
    lr: float = field(1e-5, help="AdamW learning rate (paper: 1e-5)")
    warmup_steps: int = field(2000, help="linear warm-up, then constant (paper: 2000)")
    steps: int = field(100000, help="optimizer steps (paper: ~100k)")
    global_batch_size: int = field(128, help="sequences per optimizer step (paper: 128)")
    micro_batch_size: int = field(8, help="sequences per forward pass; accumulation fills the global batch")
    checkpoint_every: int = field(1000, help="save (and keep) a checkpoint every N steps")
    log_every: int = field(10, help="write metrics every N steps")
    seed: int = field(0, help="training seed")
    attn_implementation: Literal["sdpa", "flex_attention"] = field(
        "sdpa", help="attention kernel for the packed mask: sdpa (dense 4D bool mask) or flex_attention "
                     "(BlockMask from the layout; CUDA only, falls back to sdpa with a warning elsewhere)")
    gradient_checkpointing: bool = field(
        False, help="activation checkpointing on the student (each layer recomputed in backward: less activation memory, one more forward of compute)")
    precision: Literal["mixed", "pure"] = field(
        "mixed", help="student weights: mixed = float32 master weights, gradients and optimizer state, "
                      "compute in model.dtype (bf16 autocast on GPU); pure = weights and gradients in "
                      "model.dtype (bf16: 2+2 bytes/parameter), the optimizer rounds its float32 update "
                      "stochastically (needs optimizer adamw8bit when model.dtype is bfloat16)")
    optimizer: Literal["adamw", "adamw8bit"] = field(
        "adamw", help="adamw = torch.optim.AdamW (the reference); adamw8bit = torchao.optim.AdamW8bit "
                      "(blockwise 8-bit states, 2 bytes/parameter; bf16 weights updated with stochastic "
                      "rounding); both: betas (0.9, 0.999), eps 1e-8, weight decay 0.01")
    accelerate_config: str | None = field(
        None, help="accelerate config file (config/accelerate/*.yaml) the workflow launches train-mtp with; "
                   "null = a plain process")

    def __post_init__(self):
        check(self.k_max >= 2, "k_max", "must be >= 2")
        check(self.lr > 0, "lr", "must be > 0")
        check(self.steps > 0, "steps", "must be > 0")
        check(self.global_batch_size % self.micro_batch_size == 0, "global_batch_size",
              "must be a multiple of micro_batch_size")
        check(self.num_regions is None or self.num_regions >= 1, "num_regions", "must be >= 1")
        check(self.accelerate_config is None or self.accelerate_config.endswith((".yaml", ".yml", ".json")),
              "accelerate_config", f"{self.accelerate_config!r} must be a .yaml/.yml/.json accelerate config file")
