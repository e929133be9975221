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

The names below load on first use, so ``mtpsd.decoding.sizes`` (no torch) can be imported
while Snakemake parses the workflow.
"""

import importlib

_WHERE = {"generate": "api", "generate_batch": "api", "STRATEGIES": "common", "GenerationResult": "common",
          "DecodeEngine": "engine"}
__all__ = ["STRATEGIES", "DecodeEngine", "GenerationResult", "generate", "generate_batch"]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"mtpsd.decoding.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'mtpsd.decoding' has no attribute {name!r}")
