"""Reference batched decoder with a shared ``DynamicCache`` and holes (method.md section 6).

The default path is ``mtpsd.decoding.engine`` (per-row write positions, no holes);
``generate_batch_cached`` stays as a reference the engine is tested against.

Every row may accept a different number of tokens per pass, but a ``DynamicCache``
can only be cropped for all rows at once. The scheme used here keeps one shared
cache and turns per-row differences into *holes*:

- step input, row ``i``: ``[pad * (L - len_i), pending_i, drafts_i, <MTP> * (k-1)]``
  with ``L = max_i len_i``: the real tokens are right-aligned so the ``k-1`` masks
  sit at the end of every row and one ``crop(-(k-1))`` removes them for all rows;
- a 2D attention mask (B, cache_len + L + k-1) is kept alongside the cache: pads
  (and, for verify, rejected drafts) get 0, so they are holes no query attends to;
- explicit ``position_ids``: row ``i``'s real tokens continue at ``pos_i`` (its count
  of real cached tokens), so holes never shift positions (RoPE sees the same
  positions as in single-sequence decoding);
- rows that stop are dropped from the batch (``cache.batch_select_indices``).

A model trained with bidirectional masks (BDA, ``config.mtp_attention``) gets a 4D mask
built from the same 2D one (``common.step_attention_mask``): the ``k-1`` masks at the end
of every row attend to each other in both directions.

Cost: each pass processes ``B * (max_i len_i + k - 1)`` tokens, and the cache of every
row grows by ``max_i len_i`` per pass (the longest chunk/draft row), so with
ConfAdapt the cache (memory, attention cost) can grow up to ``k`` times faster than
a row's own tokens. Outputs equal per-prompt ``generate_cached`` up to floating-point
rounding (exact in float64 on the tests' models); use batch size 1 for the
paper's speed numbers.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from mtpsd.decoding.common import (
    GenerationResult, StopChecker, Tally, accept_count, as_convention, banned_index, check_args, confident,
    default_stop_ids, mtp_attention, now, step_attention_mask, sync,
)


@torch.no_grad()
def generate_batch_cached(model, prompts: list[list[int]], *, mtp_token_id: int | None, strategy: str = "confadapt",
                   k: int = 16, tau: float = 0.9, max_new_tokens: int = 256, stop_token_ids=None,
                   stop_strings=(), tokenizer=None, banned_token_ids=None,
                   pad_token_id: int = 0, attention: str | None = None,
                   convention=None) -> list[GenerationResult]:
    """Decode ``prompts`` (lists of ids, any lengths) together; one result per prompt, in order.

    Arguments as in ``mtpsd.decoding.generate``; ``pad_token_id`` fills the holes
    (its value never matters: holes are masked). ``wall_time_s`` of a row runs from
    the batch's start to that row's last token.
    """
    conv = as_convention(convention)
    check_args(strategy, k, tau, max_new_tokens, mtp_token_id, stop_strings, tokenizer)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate_batch needs at least one prompt and no empty prompt")
    dev = model.device
    bda = mtp_attention(model, attention) == "bidirectional"
    banned = banned_index(model, mtp_token_id, tokenizer, banned_token_ids, conv)
    stop_ids = default_stop_ids(model, stop_token_ids)
    verify = strategy == "verify"
    B = len(prompts)
    tallies = [Tally(StopChecker(stop_ids, stop_strings, tokenizer, max_new_tokens), k, conv) for _ in range(B)]
    pending = [list(map(int, p)) for p in prompts]
    drafts: list[list[int]] = [[] for _ in range(B)]
    pos = [0] * B
    results: list[GenerationResult | None] = [None] * B
    active = list(range(B))  # original row index of each batch row
    cache = DynamicCache(config=model.config)
    attn = torch.zeros((B, 0), dtype=torch.long, device=dev)  # (B_active, cache_len)
    sync(dev)
    t0 = now()
    t_first = None
    while active:
        lens = [len(pending[i]) + len(drafts[i]) for i in active]
        L, M = max(lens), max(len(drafts[i]) for i in active)
        x, step_attn, step_pos = [], [], []
        for i, n in zip(active, lens):
            gap = L - n
            x.append([pad_token_id] * gap + pending[i] + drafts[i] + [mtp_token_id or 0] * (k - 1))
            step_attn.append([0] * gap + [1] * (n + k - 1))
            step_pos.append([0] * gap + list(range(pos[i], pos[i] + n + k - 1)))
        x_t = torch.tensor(x, dtype=torch.long, device=dev)  # (b, L + k-1)
        step_attn_t = torch.tensor(step_attn, dtype=torch.long, device=dev)
        full_attn = torch.cat([attn, step_attn_t], dim=1)  # (b, cache_len + L + k-1)
        mask = step_attention_mask(full_attn, x_t.shape[1], k - 1) if bda else full_attn
        logits = model(input_ids=x_t, attention_mask=mask,
                       position_ids=torch.tensor(step_pos, dtype=torch.long, device=dev),
                       past_key_values=cache, use_cache=True, logits_to_keep=M + k).logits  # (b, M+k, V)
        if k > 1:
            cache.crop(-(k - 1))
        attn = torch.cat([attn, step_attn_t[:, :L]], dim=1)
        if banned.numel():
            logits = logits.index_fill(-1, banned, float("-inf"))
        ids = logits.argmax(-1)
        ids_h = ids.tolist()  # (b, M+k)
        ok_h = confident(logits, tau, conv).long().tolist() if strategy == "confadapt" else None
        if t_first is None:
            t_first = now()
        keep = []
        for b, i in enumerate(active):
            if verify:
                m = len(drafts[i])
                g = ids_h[b][M - m: M + 1]  # greedy next tokens after pending and each draft
                a = 0
                while a < m and drafts[i][a] == g[a]:
                    a += 1
                if a < m:  # rejected drafts become holes
                    attn[b, attn.shape[1] - (m - a):] = 0
                pos[i] += lens[b] - (m - a)
                new = g[: a + 1]
                pending[i] = [g[a]]
                drafts[i] = ids_h[b][M + 1:] if a == m else []
            else:
                n = accept_count(strategy, k, ok_h[b] if ok_h is not None else None)
                pos[i] += lens[b]
                new = ids_h[b][:n]
                pending[i] = new
            if not tallies[i].add(new):
                keep.append(b)
                continue
            sync(dev)
            results[i] = tallies[i].result(t0=t0, t_first=t_first, prompt_tokens=len(prompts[i]),
                                           extras={"batch_size": B})
        if len(keep) < len(active):
            if keep:
                idx = torch.tensor(keep, dtype=torch.long, device=dev)
                cache.batch_select_indices(idx)
                attn = attn[idx]
            active = [active[b] for b in keep]
    return results  # type: ignore[return-value]
