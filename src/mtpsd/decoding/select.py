"""Which decoder runs: ``graphs``, ``eager`` or ``reference`` (config ``decode.engine``,
``--engine`` on ``mtpsd decode`` / ``mtpsd evaluate``, environment ``MTPSD_ENGINE``).

- ``graphs``: ``DecodeEngine`` with CUDA graphs (fixed shapes, captured passes); the CUDA default;
- ``eager``: the same engine without graphs (exact shapes); the CPU default, and the way out
  when something GPU-only goes wrong;
- ``reference``: ``single.generate_cached`` prompt by prompt (``DynamicCache``, no engine):
  slow, and the simplest code, to rule the engine out.

``auto`` (the config default): ``MTPSD_ENGINE`` if set, else ``graphs`` on CUDA and ``eager``
elsewhere. An explicit choice wins over the environment. Every result records the engine
that produced it (``GenerationResult.extras["engine"]``, the summaries' ``engine``).
"""

from __future__ import annotations

import os

import torch

from mtpsd.decoding.common import GenerationResult, check_args
from mtpsd.decoding.engine import engine_for
from mtpsd.errors import MtpsdError

ENGINES = ("graphs", "eager", "reference")
CHOICES = ("auto", *ENGINES)
ENV = "MTPSD_ENGINE"


def resolve_engine(name: str | None, device) -> str:
    """``name`` (None or "auto": ``MTPSD_ENGINE``, else by device) -> one of ``ENGINES``."""
    if name in (None, "", "auto"):
        name = os.environ.get(ENV) or ("graphs" if torch.device(device).type == "cuda" else "eager")
        where = f"{ENV}={name!r}" if os.environ.get(ENV) else None
    else:
        where = f"engine={name!r}"
    if name not in ENGINES:
        raise MtpsdError(f"{where}: choose one of {', '.join(CHOICES)}")
    if name == "graphs" and torch.device(device).type != "cuda":
        raise MtpsdError(f"{where}: CUDA graphs need a CUDA device, this model is on {device}; use eager")
    return name


class ReferenceDecoder:
    """``generate`` of the engine's signature, one prompt at a time through the
    ``DynamicCache`` reference (``single.generate_cached``)."""

    mode = "reference"

    def __init__(self, model, *, mtp_token_id: int | None, attention: str | None = None):
        self.model, self.mtp_token_id, self.attention = model, mtp_token_id, attention
        self.counters = {"passes": 0, "graph_captures": 0, "capture_s": 0.0}

    def prepare(self, **_) -> int:
        """Nothing to allocate or capture (the engine's ``prepare`` signature); 0 graphs."""
        return 0

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], *, strategy: str = "confadapt", k: int = 16, tau: float = 0.9,
                 max_new_tokens: int = 256, stop_token_ids=None, stop_strings=(), tokenizer=None,
                 banned_token_ids=None, accept_fn=None, convention=None) -> list[GenerationResult]:
        from mtpsd.decoding.single import generate_cached

        if accept_fn is not None:
            raise MtpsdError("the reference decoder has no accept_fn (replayed acceptance): use the engine")
        check_args(strategy, k, tau, max_new_tokens, self.mtp_token_id, stop_strings, tokenizer)
        out = []
        for p in prompts:
            res = generate_cached(self.model, torch.tensor([p], device=self.model.device),
                                  mtp_token_id=self.mtp_token_id, strategy=strategy, k=k, tau=tau,
                                  max_new_tokens=max_new_tokens, stop_token_ids=stop_token_ids,
                                  stop_strings=stop_strings, tokenizer=tokenizer, banned_token_ids=banned_token_ids,
                                  attention=self.attention, convention=convention)
            res.extras.update(batch_size=len(prompts), engine=self.mode)
            self.counters["passes"] += res.forward_passes
            out.append(res)
        return out


def decoder_for(model, mtp_token_id: int | None, *, engine: str | None, batch: int, seq_len: int, holder=None,
                attention: str | None = None, mask_budget: int | None = None):
    """The decoder ``engine`` names (see the module docstring), kept on ``holder`` (default: the
    model) and reused across calls; ``generate(prompts, ...)`` on it decodes."""
    name = resolve_engine(engine, model.device)
    if name == "reference":
        if mask_budget is not None:
            raise MtpsdError("the reference decoder has no mask budget: use engine eager or graphs")
        return ReferenceDecoder(model, mtp_token_id=mtp_token_id, attention=attention)
    return engine_for(model, mtp_token_id, batch=batch, seq_len=seq_len, holder=holder, attention=attention,
                      graphs=name == "graphs", mask_budget=mask_budget)
