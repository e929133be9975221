"""A static KV cache with per-row write positions (used by ``mtpsd.decoding.engine``).

One buffer per layer for keys and one for values, ``(rows, kv_heads, slots + 1, head_dim)``,
allocated when the cache is made (``RowCache.for_model``). A pass
hands the cache a write index ``(B, W)``: column ``j`` of row ``b`` is stored at slot
``write[b, j]`` (a row's real tokens at ``len_b, len_b + 1, ...``; padding columns at
the extra *dump* slot ``slots``, which no query ever attends). ``update`` scatters the
new keys/values there and returns the first ``kv_len`` slots of the first ``B`` rows,
so attention reads a fixed-shape window (the engine's 4D mask picks the slots each
query sees). Nothing is cropped or reallocated between passes: rewinding a row is
moving its length, and the next pass overwrites the slots past it.

Only the public ``Cache`` / ``CacheLayerMixin`` surface of transformers is used
(``update(key, value, layer_idx)`` from the attention modules; checked against
transformers 5.17 and 5.23), so any HF decoder whose attention calls
``past_key_values.update`` works (Llama, Qwen3, SmolLM2).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class RowLayer(CacheLayerMixin):
    """One layer's buffers, allocated up front (never inside a pass: a captured pass must find
    every buffer it writes already in place)."""

    is_compileable = True
    is_sliding = False

    def __init__(self, owner: "RowCache", shape: tuple[int, int, int, int], dtype, device):
        super().__init__()
        self.owner = owner
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise RuntimeError("RowLayer buffers are allocated up front")

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Store ``key_states`` (B, H, W, D) at the owner's write slots; return the (B, H, kv_len, D) windows."""
        B = key_states.shape[0]
        idx = self.owner.write_index  # (B, 1, W, 1)
        self.keys[:B].scatter_(2, idx.expand_as(key_states), key_states)
        self.values[:B].scatter_(2, idx.expand(-1, value_states.shape[1], -1, value_states.shape[-1]), value_states)
        n = self.owner.kv_len
        return self.keys[:B, :, :n], self.values[:B, :, :n]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.kv_len, 0

    def get_seq_length(self) -> int:
        return self.owner.kv_len

    def get_max_length(self) -> int:
        return self.owner.slots

    def compact(self, keep: torch.Tensor, used: int) -> None:
        """Move rows ``keep`` (physical indices, ascending) to rows ``0..len(keep)-1`` (first ``used`` slots)."""
        n = keep.numel()
        self.keys[:n, :, :used] = self.keys[keep, :, :used]
        self.values[:n, :, :used] = self.values[keep, :, :used]


class RowCache(Cache):
    """``num_layers`` :class:`RowLayer` s of ``rows`` rows and ``slots`` slots (plus the dump
    slot) of ``kv_heads x head_dim`` keys and values each, in ``dtype`` on ``device``.

    Before every forward pass the engine sets ``write_index`` (LongTensor (B, 1, W, 1):
    the slot of every input column) and ``kv_len`` (the number of slots attention reads).
    """

    def __init__(self, num_layers: int, rows: int, slots: int, *, kv_heads: int, head_dim: int, dtype, device):
        self.rows, self.slots = rows, slots
        self.write_index: torch.Tensor | None = None
        self.kv_len = 0
        shape = (rows, kv_heads, slots + 1, head_dim)
        super().__init__(layers=[RowLayer(self, shape, dtype, device) for _ in range(num_layers)])

    @classmethod
    def for_model(cls, model, rows: int, slots: int) -> "RowCache":
        """Buffers shaped for ``model``'s attention (its config), in its dtype and on its device."""
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        heads = int(cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        p = model.get_output_embeddings().weight
        return cls(int(cfg.num_hidden_layers), rows, slots, kv_heads=int(getattr(cfg, "num_key_value_heads", None)
                                                                         or heads),
                   head_dim=head_dim, dtype=p.dtype, device=p.device)

    @property
    def nbytes(self) -> int:
        return sum(layer.keys.nbytes + layer.values.nbytes for layer in self.layers)

    @property
    def dump_slot(self) -> int:
        """Where padding columns are written; outside every ``kv_len`` window."""
        return self.slots

    def compact(self, keep: torch.Tensor, used: int) -> None:
        for layer in self.layers:
            layer.compact(keep, used)
