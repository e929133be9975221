"""The definition of MTP decoding without any cache (method.md section 6), for tests.

Every step recomputes the whole sequence ``[prompt, emitted, <MTP>*(k-1)]`` (T + n + k-1
tokens, plain causal mask; for a model trained with bidirectional masks (BDA) the causal
mask with the ``k-1`` masks attending to each other both ways, written out here as a
dense matrix) and reads the last ``k`` logits. O(steps * length) compute:
use it only to check that the cached decoders produce the same tokens and chunks.
"""

from __future__ import annotations

import torch

from mtpsd.decoding.common import (
    GenerationResult, StopChecker, Tally, accept_count, as_convention, banned_index, check_args, default_stop_ids,
    mtp_attention, now, readout,
)


def full_mask(length: int, n_masks: int, device) -> torch.Tensor:
    """(1, 1, length, length) bool: causal, plus the last ``n_masks`` positions attending to
    each other in both directions (the BDA training mask of one region), element by element."""
    m = torch.zeros((length, length), dtype=torch.bool, device=device)
    first = length - n_masks
    for q in range(length):
        for key in range(length):
            m[q, key] = key <= q or (q >= first and key >= first)
    return m[None, None]


@torch.no_grad()
def generate_no_cache(model, input_ids: torch.Tensor, *, mtp_token_id: int | None, strategy: str = "confadapt",
                      k: int = 16, tau: float = 0.9, max_new_tokens: int = 256, stop_token_ids=None,
                      stop_strings=(), tokenizer=None, banned_token_ids=None,
                      attention: str | None = None, convention=None) -> GenerationResult:
    """Static-k / ConfAdapt by full recomputation; same arguments as ``generate``."""
    conv = as_convention(convention)
    check_args(strategy, k, tau, max_new_tokens, mtp_token_id, stop_strings, tokenizer)
    if strategy == "verify":
        raise ValueError("the no-cache reference covers static and confadapt; verify equals k=1 greedy")
    dev = model.device
    bda = mtp_attention(model, attention) == "bidirectional"
    banned = banned_index(model, mtp_token_id, tokenizer, banned_token_ids, conv)
    tally = Tally(StopChecker(default_stop_ids(model, stop_token_ids), stop_strings, tokenizer, max_new_tokens),
                  k, conv)
    prompt = input_ids[0].tolist()
    stream: list[int] = []  # every accepted token (both accountings are prefixes of it)
    t0 = now()
    while True:
        seq = torch.tensor([prompt + stream + [mtp_token_id or 0] * (k - 1)], device=dev)  # (1, T+n+k-1)
        mask = full_mask(seq.shape[1], k - 1, dev) if bda else None
        logits = model(input_ids=seq, attention_mask=mask, use_cache=False).logits[0, -k:]  # (k, V)
        _, host = readout(logits, banned, strategy, tau, conv)
        n = accept_count(strategy, k, host[1] if len(host) > 1 else None)
        stream += host[0][:n]
        if tally.add(host[0][:n]):
            return tally.result(t0=t0, t_first=t0, prompt_tokens=len(prompt))
