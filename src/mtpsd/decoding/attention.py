"""The decoding engine's attention: sdpa over the engine's 4D mask, with grouped-query heads
packed into the query length instead of copying keys and values.

transformers' sdpa path repeats K/V ``n_rep = heads / kv_heads`` times (``repeat_kv``)
whenever a mask is given (always, with the engine's per-row mask) except for one-token
queries in recent versions: a copy of the attended cache per layer and pass, which at
large batch costs as much memory traffic as the weights. Here query heads ``g*r .. g*r+r-1``
(those that share kv head ``g``) are stacked along the query axis, ``(B, H, W, D) ->
(B, H_kv, r*W, D)``, and the mask rows are repeated to match (the engine builds the mask in
that packed shape once per pass), so attention reads the cache as stored. The result is
the same attention (tests: engine == reference on Llama and grouped-query Qwen3).

Registered as ``ENGINE_ATTENTION`` in transformers' ``AttentionInterface`` (public API of
transformers 5.17 and 5.23); the engine selects it only for the duration of its own passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from mtpsd.errors import MtpsdError

ENGINE_ATTENTION = "mtpsd_engine_sdpa"


def packed_mask(allowed: torch.Tensor, n_rep: int, zero: torch.Tensor, neg_inf: torch.Tensor) -> torch.Tensor:
    """``allowed`` (B, W, S) bool -> additive mask (B, 1, n_rep * W, S) for packed queries."""
    B, W, S = allowed.shape
    mask = torch.where(allowed, zero, neg_inf)  # (B, W, S)
    return mask[:, None].expand(B, n_rep, W, S).reshape(B, 1, n_rep * W, S)


def engine_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor,
                dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """``query`` (B, H, W, D), ``key``/``value`` (B, H_kv, S, D), ``attention_mask`` additive,
    (B, 1, W, S) or packed (B, 1, r*W, S) -> ``(B, W, H, D)``, as transformers' attention functions."""
    for name in ("softcap", "sliding_window", "s_aux"):
        if kwargs.get(name) is not None:
            raise MtpsdError(f"the decoding engine's attention does not support {name} (model {type(module).__name__})")
    B, H, W, D = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    r = H // Hkv
    if r > 1:
        query = query.reshape(B, Hkv, r * W, D)
        if attention_mask.shape[2] != r * W:
            attention_mask = attention_mask.expand(B, 1, W, S)[:, :, None].expand(B, 1, r, W, S).reshape(B, 1, r * W, S)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling)
    return out.reshape(B, H, W, D).transpose(1, 2).contiguous(), None


AttentionInterface.register(ENGINE_ATTENTION, engine_sdpa)
