"""The public decoding entry points (design.md), routed through the decoding engine.

``generate`` (one prompt) and ``generate_batch`` (several) run on the decoder ``engine``
names (``select``: ``graphs`` / ``eager`` / ``reference``; ``None`` = ``MTPSD_ENGINE``, else
CUDA graphs on CUDA and eager elsewhere), kept on the model (created on first use,
enlarged when a request needs more rows or slots), so buffers and captured CUDA graphs are
reused across calls. The ``DynamicCache`` decoders (``single.generate_cached``,
``batch.generate_batch_cached``) are the references they are tested against.
"""

from __future__ import annotations

import torch

from mtpsd.decoding.common import GenerationResult
from mtpsd.decoding.select import decoder_for


def generate(model, input_ids: torch.Tensor, *, mtp_token_id: int | None, strategy: str = "confadapt",
             k: int = 16, tau: float = 0.9, max_new_tokens: int = 256, stop_token_ids=None,
             stop_strings=(), tokenizer=None, banned_token_ids=None, attention: str | None = None,
             engine: str | None = None, convention: str | None = None) -> GenerationResult:
    """Decode one prompt ``input_ids`` (1, T) with ``strategy`` (static | confadapt | verify).

    ``k``: chunk size for static, ``k_max`` for confadapt, proposal length for verify.
    ``stop_token_ids``: ``None`` = the model's EOS ids; ``stop_strings`` need ``tokenizer``.
    ``banned_token_ids``: ``None`` = ``<MTP>`` and vocabulary padding rows
    (``mtpsd.vocab.banned_token_ids``).
    ``attention``: mask among the ``<MTP>`` inputs, "causal" or "bidirectional" (a BDA-trained
    model); ``None`` = the checkpoint's ``config.mtp_attention`` (else causal).
    ``engine``: "graphs" | "eager" | "reference" (``mtpsd.decoding.select``; None = auto).
    ``convention``: "project" (None, the default) | "authors": the authors' decoding conventions
    (``mtpsd.decoding.common.Convention``); ``res.accounting`` holds both accountings.
    """
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must have shape (1, T), got {tuple(input_ids.shape)}")
    return generate_batch(model, [input_ids[0].tolist()], mtp_token_id=mtp_token_id, strategy=strategy, k=k,
                          tau=tau, max_new_tokens=max_new_tokens, stop_token_ids=stop_token_ids,
                          stop_strings=stop_strings, tokenizer=tokenizer, banned_token_ids=banned_token_ids,
                          attention=attention, engine=engine, convention=convention)[0]


def generate_batch(model, prompts: list[list[int]], *, mtp_token_id: int | None, strategy: str = "confadapt",
                   k: int = 16, tau: float = 0.9, max_new_tokens: int = 256, stop_token_ids=None,
                   stop_strings=(), tokenizer=None, banned_token_ids=None,
                   pad_token_id: int | None = None, attention: str | None = None,
                   engine: str | None = None, convention: str | None = None) -> list[GenerationResult]:
    """Decode ``prompts`` (lists of ids, any lengths) together; one result per prompt, in order.

    Arguments as in ``generate``; ``pad_token_id`` is accepted for compatibility and unused
    (the engine's padding never reaches a real row). Each row's output equals decoding it alone.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate_batch needs at least one prompt and no empty prompt")
    seq_len = max(len(p) for p in prompts) + max(int(max_new_tokens), 1) + 2 * max(int(k), 1)
    eng = decoder_for(model, mtp_token_id, engine=engine, batch=len(prompts), seq_len=seq_len, attention=attention)
    return eng.generate(prompts, strategy=strategy, k=k, tau=tau, max_new_tokens=max_new_tokens,
                        stop_token_ids=stop_token_ids, stop_strings=stop_strings, tokenizer=tokenizer,
                        banned_token_ids=banned_token_ids, convention=convention)
