"""The engine's sizes and its working-memory bound, without torch.

The decoding engine (:mod:`mtpsd.decoding.engine`) allocates by these numbers, and the
evaluation memory plan (:mod:`mtpsd.evaluation.memory_plan`) adds them up while Snakemake
parses the workflow, where importing torch would cost every dry run seconds.
"""

from __future__ import annotations

SLOT_ROUND = 256  # cache slots grow in steps of this many
PREFILL_CHUNK = 512  # default columns per row of one prefill pass
KV_BUCKET = 256  # with CUDA graphs, attended KV lengths are multiples of this (the engine's default)


def pass_bytes(*, batch: int, width: int, kv: int, read: int, heads: int, kv_heads: int, hidden: int,
               intermediate: int, vocab: int, dtype_bytes: int) -> int:
    """Upper bound of one pass's working memory beyond weights and KV cache, in bytes.

    The 4D mask (``batch x heads/kv_heads*width x kv``, model dtype), attention scores as the
    math kernel would materialise them (``batch x heads x width x kv``, float32; the
    memory-efficient kernel needs far less), the hidden states and MLP activations of one
    layer (``batch x width x (4 hidden + 3 intermediate)``, model dtype) and the read-out
    logits (``batch x read x vocab``: model dtype, float32 copy, softmax). Prefill passes
    have ``width <= prefill_chunk``; decode passes ``width <= 2k - 1``.
    """
    tokens = batch * width
    mask = batch * (heads // kv_heads) * width * kv * dtype_bytes
    scores = batch * heads * width * kv * 4
    acts = tokens * (4 * hidden + 3 * intermediate) * dtype_bytes
    logits = batch * read * vocab * (dtype_bytes + 8)
    return mask + scores + acts + logits
