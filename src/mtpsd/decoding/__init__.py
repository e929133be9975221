"""MTP decoding (method.md section 6): Static-k, ConfAdapt, lossless self-verify; KV cache; batches.

    from mtpsd.decoding import generate
    res = generate(model, input_ids, mtp_token_id=model.config.mtp_token_id,
                   strategy="confadapt", k=16, tau=0.9, max_new_tokens=256)
    res.tokens, res.chunk_sizes  # sum(res.chunk_sizes) == len(res.tokens)

- ``api.generate`` / ``api.generate_batch``: the default path, through the engine kept on the model.
- ``engine.DecodeEngine``: static KV cache with per-row write positions, fixed shapes, CUDA graphs.
- ``single.generate_cached`` / ``batch.generate_batch_cached``: the ``DynamicCache`` reference
  decoders (mask cropping; left-padded batch with holes).
- ``reference.generate_no_cache``: the definition (whole sequence recomputed every step),
  used by the tests to pin the cached decoders down.
"""

from mtpsd.decoding.api import generate, generate_batch
from mtpsd.decoding.common import STRATEGIES, GenerationResult
from mtpsd.decoding.engine import DecodeEngine

__all__ = ["STRATEGIES", "DecodeEngine", "GenerationResult", "generate", "generate_batch"]
