"""Model section: the base model (trained from scratch for the default, or pretrained)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mtpsd.config.base import check, field


@dataclass
class TinyModelConfig:
    """Llama architecture of the from-scratch base model (source: scratch)."""

    vocab_size: int = field(1024, help="cap on the BPE vocabulary trained on the synthetic corpus "
                                       "(the model gets the tokenizer's actual size)")
    hidden_size: int = field(96, help="model width")
    num_layers: int = field(4, help="transformer blocks")
    num_heads: int = field(4, help="attention heads")
    intermediate_size: int = field(288, help="MLP width")
    max_position_embeddings: int = field(512, help="longest sequence")

    def __post_init__(self):
        for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                  "max_position_embeddings"):
            check(getattr(self, k) > 0, k, "must be > 0")
        check(self.hidden_size % self.num_heads == 0, "hidden_size", "must be divisible by num_heads")
        check(self.vocab_size > 263, "vocab_size", "must exceed 263 (256 bytes + 7 special tokens)")


@dataclass
class PretrainConfig:
    """Plain next-token training of the tiny base model (packed rows, AdamW, cosine)."""

    steps: int = field(2300, help="optimizer steps (~4.5 min on 2 CPU cores at the defaults)")
    batch_size: int = field(16, help="packed rows per step (more, smaller steps beat fewer large ones here)")
    lr: float = field(3e-3, help="peak learning rate (cosine decay to 10% after warm-up)")
    warmup_steps: int = field(60, help="linear warm-up steps")
    weight_decay: float = field(0.1, help="AdamW weight decay")
    max_length: int = field(160, help="tokens per packed row (and cap on one example)")
    eval_max_new_tokens: int = field(192, help="generation budget of the greedy test evaluation (longest synthetic answer: ~100 tokens)")

    def __post_init__(self):
        for k in ("steps", "batch_size", "max_length", "eval_max_new_tokens"):
            check(getattr(self, k) > 0, k, "must be > 0")
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(self.lr > 0, "lr", "must be > 0")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")


@dataclass
class ModelConfig:
    name: str = field("tiny", help="short name; artefacts go to results/models/{name}")
    source: Literal["scratch", "pretrained"] = field(
        "scratch", help="scratch: train the tiny model; pretrained: load `pretrained`"
    )
    pretrained: str | None = field(
        None, help="hub id, local directory, or .gguf file (source: pretrained)"
    )
    chat_template: bool = field(
        False, help="format prompts with the tokenizer's chat template; off: BOS + input + '\\n\\n' + response"
    )
    dtype: Literal["auto", "float32", "bfloat16"] = field(
        "auto", help="compute dtype; auto = bfloat16 on GPU, float32 on CPU"
    )
    paper_model: str | None = field(
        None, help="the paper's model this run is compared with (`model` column of paper_results.csv, "
                   "e.g. L3.1-8B-Magpie); null = beside every paper model"
    )
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig, help="from-scratch architecture")
    pretrain: PretrainConfig = field(default_factory=PretrainConfig, help="from-scratch training")

    def __post_init__(self):
        check(bool(self.name) and "/" not in self.name, "name", "must be a non-empty name without '/'")
        check(
            self.source == "scratch" or bool(self.pretrained),
            "pretrained",
            "must name a hub id, directory or .gguf file when source is 'pretrained'",
        )
