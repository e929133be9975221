"""The optimizer a config names (``train.optimizer``), with PyTorch AdamW as the reference.

- ``adamw``: ``torch.optim.AdamW`` (betas 0.9/0.999, eps 1e-8, weight decay 0.01): two states
  in the parameter dtype. With bf16 weights (``train.precision: pure``) it is refused: an
  update of lr 1e-5 is below bf16's relative precision (2^-8) for most weights, so plain
  rounding would drop most updates.
- ``adamw8bit``: ``torchao.optim.AdamW8bit`` with the same hyperparameters: blockwise 8-bit
  states (256 values per scale, tensors under 4096 values stay full precision), the update
  computed in float32 and, for bf16 weights, rounded stochastically
  (``bf16_stochastic_round``: unbiased, so small updates survive on average). torchao is
  maintained by the PyTorch team, pure PyTorch (``torch.compile`` fuses the step; CPU and
  CUDA) and FSDP2-aware. Equivalence with AdamW: tests/test_optim.py.
"""

from __future__ import annotations

import torch

from mtpsd.errors import MtpsdError

BETAS, EPS, WEIGHT_DECAY = (0.9, 0.999), 1e-8, 0.01  # torch.optim.AdamW's defaults


def build_optimizer(params, *, name: str, lr: float, weight_dtype: torch.dtype) -> torch.optim.Optimizer:
    """``name`` (train.optimizer) over ``params`` whose weights are ``weight_dtype``."""
    if name == "adamw":
        if weight_dtype in (torch.bfloat16, torch.float16):
            raise MtpsdError(f"train.optimizer: adamw on {weight_dtype} weights (train.precision: pure) loses "
                             "updates smaller than the weights' rounding step; use train.optimizer: adamw8bit "
                             "(stochastic rounding) or train.precision: mixed (float32 master weights)")
        return torch.optim.AdamW(params, lr=lr, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    if name == "adamw8bit":
        try:
            from torchao.optim import AdamW8bit
        except ImportError:
            raise MtpsdError("train.optimizer: adamw8bit needs torchao (pip install torchao==0.18.0, "
                             "or `pip install -e .[gpu]`)") from None

        class EagerOnCPU(AdamW8bit):
            """torchao compiles the update per tensor shape (tens of seconds each on a CPU); CPU
            runs (tests, tiny models) take the same function eagerly instead."""

            def step(self, closure=None):
                if any(p.device.type != "cpu" for g in self.param_groups for p in g["params"]):
                    return super().step(closure)
                with torch.compiler.set_stance("force_eager"):
                    return super().step(closure)

        return EagerOnCPU(params, lr=lr, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY,
                          bf16_stochastic_round=weight_dtype == torch.bfloat16)
    raise MtpsdError(f"train.optimizer: unknown optimizer {name!r} (adamw, adamw8bit)")
