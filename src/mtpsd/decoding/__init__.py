"""MTP decoding (method.md section 6): Static-k, ConfAdapt, lossless self-verify; KV cache; batches.

    from mtpsd.decoding import generate
    res = generate(model, input_ids, mtp_token_id=model.config.mtp_token_id,
                   strategy="confadapt", k=16, tau=0.9, max_new_tokens=256)
    res.tokens, res.chunk_sizes  # sum(res.chunk_sizes) == len(res.tokens)

- ``single.generate``: one prompt, KV cache with mask cropping (the fast path).
- ``batch.generate_batch``: left-padded prompts, per-row chunk sizes.
- ``reference.generate_no_cache``: the definition (whole sequence recomputed every step),
  used by the tests to pin the cached decoders down.
"""

from mtpsd.decoding.batch import generate_batch
from mtpsd.decoding.common import STRATEGIES, GenerationResult
from mtpsd.decoding.single import generate

__all__ = ["STRATEGIES", "GenerationResult", "generate", "generate_batch"]
