"""Reference decoder, one sequence with a ``DynamicCache``: Static-k, ConfAdapt, verify (method.md section 6).

The default path is ``mtpsd.decoding.engine`` (static cache, fixed shapes);
``generate_cached`` stays as the simple reference the engine is tested against.

Read-out. With the prefix ``x_{<=t}`` in the cache, one forward pass on
``[x_t, <MTP>*(k-1)]`` (plain causal mask, positions continuing) gives logits
``l_1..l_k`` at ``x_t`` and at the ``k-1`` masks; ``y_j = argmax l_j`` are the next
``k`` tokens (``y_1`` is exactly the greedy next token, since ``x_t`` sees no mask).
After the pass the ``k-1`` mask entries are cropped from the cache
(``DynamicCache.crop(-(k-1))``); the emitted tokens are fed at the next pass.

Verify (lossless self-speculative). The drafts ``d_1..d_m`` (the mask read-outs of
the previous pass, ``m = k-1``) are fed as real tokens before the new masks:
input ``[x_t, d_1..d_m, <MTP>*(k-1)]``. The logits at ``x_t, d_1..d_m`` are the greedy
predictions ``g_1..g_{m+1}`` given the drafts so far; accept the longest ``a`` with
``d_i = g_i`` for ``i <= a`` and emit ``g_1..g_{a+1}`` (``a`` drafts + the bonus token).
If ``a = m`` the masks (which followed only accepted tokens) give the next drafts;
otherwise the rejected drafts and the masks are cropped and the next pass has no
drafts. Every emitted token is a greedy token, so the output equals k=1 greedy.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from mtpsd.decoding.common import (
    GenerationResult, StopChecker, Tally, accept_count, as_convention, banned_index, check_args, default_stop_ids,
    mtp_attention, now, readout, step_attention_mask, sync,
)


@torch.no_grad()
def generate_cached(model, input_ids: torch.Tensor, *, mtp_token_id: int | None, strategy: str = "confadapt",
             k: int = 16, tau: float = 0.9, max_new_tokens: int = 256, stop_token_ids=None,
             stop_strings=(), tokenizer=None, banned_token_ids=None,
             attention: str | None = None, convention=None) -> GenerationResult:
    """Decode one prompt ``input_ids`` (1, T) with ``strategy`` (static | confadapt | verify).

    ``k``: chunk size for static, ``k_max`` for confadapt, proposal length for verify.
    ``stop_token_ids``: ``None`` = the model's EOS ids; ``stop_strings`` need ``tokenizer``.
    ``banned_token_ids``: ``None`` = ``<MTP>`` and vocabulary padding rows
    (``mtpsd.vocab.banned_token_ids``).
    ``attention``: mask among the ``<MTP>`` inputs, "causal" or "bidirectional"; ``None`` =
    the checkpoint's ``config.mtp_attention`` (else causal).
    ``convention``: "project" (default) | "authors" (``common.Convention``); both accountings
    are in ``accounting``.
    """
    conv = as_convention(convention)
    check_args(strategy, k, tau, max_new_tokens, mtp_token_id, stop_strings, tokenizer)
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must have shape (1, T), got {tuple(input_ids.shape)}")
    dev = model.device
    input_ids = input_ids.to(dev)
    banned = banned_index(model, mtp_token_id, tokenizer, banned_token_ids, conv)
    stop = StopChecker(default_stop_ids(model, stop_token_ids), stop_strings, tokenizer, max_new_tokens)
    tally = Tally(stop, k, conv)
    masks = torch.full((1, k - 1), mtp_token_id if k > 1 else 0, dtype=torch.long, device=dev)  # (1, k-1)
    cache = DynamicCache(config=model.config)
    step = _verify_loop if strategy == "verify" else _chunk_loop
    forward = _Forward(model, cache, k - 1, mtp_attention(model, attention) == "bidirectional")
    sync(dev)
    t0 = now()
    t_first = step(forward, input_ids, masks, cache, banned, tally, strategy, k, tau, conv)
    sync(dev)
    return tally.result(t0=t0, t_first=t_first, prompt_tokens=int(input_ids.shape[1]))


class _Forward:
    """One cached pass; with ``bda`` the pass's trailing ``n_masks`` inputs attend to each
    other in both directions (4D mask), else HF's own causal mask."""

    def __init__(self, model, cache, n_masks: int, bda: bool):
        self.model, self.cache, self.n_masks, self.bda = model, cache, n_masks, bda

    def __call__(self, x: torch.Tensor, logits_to_keep: int) -> torch.Tensor:
        mask = None
        if self.bda:
            kv = self.cache.get_seq_length() + x.shape[1]
            valid = torch.ones((1, kv), dtype=torch.bool, device=x.device)
            mask = step_attention_mask(valid, x.shape[1], self.n_masks)
        return self.model(input_ids=x, attention_mask=mask, past_key_values=self.cache, use_cache=True,
                          logits_to_keep=logits_to_keep).logits[0]


def _chunk_loop(forward, input_ids, masks, cache, banned, tally, strategy, k, tau, conv):
    """Static-k / ConfAdapt: feed last chunk + k-1 masks, read k tokens, crop the masks.
    Returns when the first chunk came (the end of prefill)."""
    x = torch.cat([input_ids, masks], dim=1)  # (1, T + k-1)
    t_first = None
    while True:
        logits = forward(x, k)  # (k, V)
        if k > 1:
            cache.crop(-(k - 1))
        ids, host = readout(logits, banned, strategy, tau, conv)  # ids (k,)
        n = accept_count(strategy, k, host[1] if len(host) > 1 else None)
        t_first = now() if t_first is None else t_first
        if tally.add(host[0][:n]):
            return t_first
        x = torch.cat([ids[:n].view(1, n), masks], dim=1) if k > 1 else ids.view(1, 1)  # (1, n + k-1)


def _verify_loop(forward, input_ids, masks, cache, banned, tally, strategy, k, tau, conv):
    """Lossless self-verify: feed pending + drafts (real) + masks; keep the greedy-consistent prefix."""
    pending = input_ids  # (1, P) tokens not yet in the cache
    drafts = input_ids[:, :0]  # (1, m)
    draft_host: list[int] = []
    t_first = None
    while True:
        m = drafts.shape[1]
        x = torch.cat([pending, drafts, masks], dim=1)  # (1, P + m + k-1)
        logits = forward(x, m + k)
        ids, host = readout(logits, banned, "static", 0.0, conv)  # (m + k,): g_1..g_{m+1}, then k-1 proposals
        g = host[0]
        a = 0
        while a < m and draft_host[a] == g[a]:
            a += 1
        drop = (k - 1) + (m - a)  # masks + rejected drafts
        if drop:
            cache.crop(-drop)
        t_first = now() if t_first is None else t_first
        if tally.add(g[: a + 1]):
            return t_first
        pending = ids[a: a + 1].view(1, 1)  # the bonus token g_{a+1}
        if a == m and k > 1:
            drafts, draft_host = ids[m + 1:].view(1, k - 1), g[m + 1:]
        else:
            drafts, draft_host = ids[:0].view(1, 0), []
