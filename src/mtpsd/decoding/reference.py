"""The definition of MTP decoding without any cache (method.md section 6), for tests.

Every step recomputes the whole sequence ``[prompt, emitted, <MTP>*(k-1)]`` (T + n + k-1
tokens, plain causal mask) and reads the last ``k`` logits. O(steps * length) compute:
use it only to check that the cached decoders produce the same tokens and chunks.
"""

from __future__ import annotations

import torch

from mtpsd.decoding.common import (
    GenerationResult, StopChecker, accept_count, banned_index, check_args, default_stop_ids, now,
    readout,
)


@torch.no_grad()
def generate_no_cache(model, input_ids: torch.Tensor, *, mtp_token_id: int | None, strategy: str = "confadapt",
                      k: int = 16, tau: float = 0.9, max_new_tokens: int = 256, stop_token_ids=None,
                      stop_strings=(), tokenizer=None, banned_token_ids=None) -> GenerationResult:
    """Static-k / ConfAdapt by full recomputation; same arguments as ``generate``."""
    check_args(strategy, k, tau, max_new_tokens, mtp_token_id, stop_strings, tokenizer)
    if strategy == "verify":
        raise ValueError("the no-cache reference covers static and confadapt; verify equals k=1 greedy")
    dev = model.device
    banned = banned_index(model, mtp_token_id, tokenizer, banned_token_ids)
    stop = StopChecker(default_stop_ids(model, stop_token_ids), stop_strings, tokenizer, max_new_tokens)
    prompt = input_ids[0].tolist()
    tokens: list[int] = []
    chunks: list[int] = []
    t0 = now()
    while True:
        seq = torch.tensor([prompt + tokens + [mtp_token_id or 0] * (k - 1)], device=dev)  # (1, T+n+k-1)
        logits = model(input_ids=seq, use_cache=False).logits[0, -k:]  # (k, V)
        _, host = readout(logits, banned, strategy, tau)
        n = accept_count(strategy, k, host[1] if len(host) > 1 else None)
        chunk, reason = stop.cut(tokens, host[0][:n])
        tokens += chunk
        chunks.append(len(chunk))
        if reason is not None:
            t1 = now()
            return GenerationResult(tokens, chunks, len(chunks), t1 - t0, 0.0, t1 - t0, reason,
                                    stop.text(tokens), len(prompt))
