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
  CUDA) and FSDP2-aware. Equivalence with AdamW: tests/test_optim.py. Under FSDP2 each process
  updates its shards of the weights (DTensors) eagerly (:class:`_ShardedStep`; tests/test_fsdp.py).
"""

from __future__ import annotations

import torch

from mtpsd.errors import MtpsdError

BETAS, EPS, WEIGHT_DECAY = (0.9, 0.999), 1e-8, 0.01  # torch.optim.AdamW's defaults


def build_optimizer(params, *, name: str, lr: float, weight_dtype: torch.dtype,
                    full_precision_state: tuple = ()) -> torch.optim.Optimizer:
    """``name`` (train.optimizer) over ``params`` whose weights are ``weight_dtype``.

    ``full_precision_state``: parameters whose adamw8bit states stay float32 (the input
    embedding: rows of tokens absent from a batch get zero gradients, and a second moment
    quantized to zero beside a first moment that is not turns ``m / (sqrt(v) + eps)`` into a
    jump of up to 1e8 x lr; bitsandbytes keeps embeddings' states in 32 bits for the same reason).
    """
    if name == "adamw":
        if weight_dtype in (torch.bfloat16, torch.float16):
            raise MtpsdError(f"train.optimizer: adamw on {weight_dtype} weights (train.precision: pure) loses "
                             "updates smaller than the weights' rounding step; use train.optimizer: adamw8bit "
                             "(stochastic rounding) or train.precision: mixed (float32 master weights)")
        return torch.optim.AdamW(params, lr=lr, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    if name == "adamw8bit":
        return _adamw8bit(params, lr=lr, weight_dtype=weight_dtype, full_precision_state=full_precision_state)
    raise MtpsdError(f"train.optimizer: unknown optimizer {name!r} (adamw, adamw8bit)")


def keep_full_precision_state(optimizer, params) -> None:
    """Mark ``params`` for float32 adamw8bit states (after ``accelerator.prepare``, which may
    replace parameters, e.g. by FSDP2's DTensors); no-op for other optimizers."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it
    if hasattr(inner, "full_precision_ids"):
        inner.full_precision_ids = {id(p) for p in params}


def _adamw8bit(params, *, lr: float, weight_dtype: torch.dtype, full_precision_state: tuple):
    try:
        from torchao.optim import AdamW8bit
    except ImportError:
        raise MtpsdError("train.optimizer: adamw8bit needs torchao (pip install torchao==0.18.0, "
                         "or `pip install -e .[gpu]`)") from None

    class MtpsdAdamW8bit(_ShardedStep, AdamW8bit):
        """torchao's AdamW8bit with float32 states for the parameters in ``full_precision_ids``
        (kept float32 through ``load_state_dict`` too, which would cast them to the parameter
        dtype); on CPU the update runs eagerly (torchao compiles it per tensor shape: tens of
        seconds each on a CPU, for tests and tiny models; the same function either way); FSDP2's
        sharded weights are updated shard by shard (:class:`_ShardedStep`)."""

        full_precision_ids: set[int] = set()

        def _new_buffer(self, p, signed):
            if id(p) in self.full_precision_ids:
                return torch.zeros_like(p, dtype=torch.float32)
            return super()._new_buffer(p, signed)

        def load_state_dict(self, state_dict):
            super().load_state_dict(state_dict)
            # the saved groups name their parameters by index, or by name (FSDP2's sharded
            # optimizer state, torch.distributed.checkpoint): matched in order, as torch does
            saved = [k for g in state_dict["param_groups"] for k in g["params"]]
            params = dict(zip(saved, (p for g in self.param_groups for p in g["params"]), strict=True))
            for key, st in state_dict["state"].items():
                p = params[key]
                if id(p) in self.full_precision_ids:
                    for k, v in st.items():
                        if k != "step" and torch.is_tensor(v):
                            self.state[p][k] = v.to(device=p.device, dtype=torch.float32)

        def step(self, closure=None):
            if self.has_sharded_params():
                return self.sharded_step(closure)
            if any(p.device.type != "cpu" for g in self.param_groups for p in g["params"]):
                return super().step(closure)
            with torch.compiler.set_stance("force_eager"):
                return super().step(closure)

    opt = MtpsdAdamW8bit(params, lr=lr, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY,
                         bf16_stochastic_round=weight_dtype == torch.bfloat16)
    keep_full_precision_state(opt, full_precision_state)
    return opt


class _ShardedStep:
    """torchao's update for FSDP2's sharded weights (DTensors), run eagerly on each process's
    local shards: AdamW is elementwise and the 8-bit states are quantized per local shard
    (torchao's ``_new_buffer``), so this is the update of the whole tensor.

    torchao's own step does not run on DTensors of bf16 weights here (torch 2.13, torchao 0.18,
    2 CPU processes with gloo): the sharding propagation of ``lerp`` sees the 8-bit state's
    float32 copy as bf16 beside the float32 gradient, eagerly and compiled; compiled on the local
    shards it stops at ``aten.view.dtype``, which its 8-bit state class does not implement. Eager
    costs a few more kernel launches per tensor; on CUDA this path is unexecuted."""

    def has_sharded_params(self) -> bool:
        from torch.distributed.tensor import DTensor

        return any(isinstance(p, DTensor) for g in self.param_groups for p in g["params"])

    @torch.no_grad()
    def sharded_step(self, closure=None):
        from torchao.optim.adam import single_param_adam

        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:  # as torchao's step initialises it (DTensor states over 8-bit local shards)
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = self._new_buffer(p, True)
                    state["exp_avg_sq"] = self._new_buffer(p, False)
                state["step"] += 1
                single_param_adam(_local(p.detach()), _local(p.grad), state["step"], _local(state["exp_avg"]),
                                  _local(state["exp_avg_sq"]), None, group["lr"], group["betas"][0],
                                  group["betas"][1], group["weight_decay"], group["eps"], self.is_adamw,
                                  self.bf16_stochastic_round and p.dtype is torch.bfloat16)
        return loss


def _local(t):
    """The local shard of a DTensor (a view: in-place updates reach the parameter), else ``t``."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t
