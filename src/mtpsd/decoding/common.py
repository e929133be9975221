"""Pieces shared by the single-sequence and batched decoders (method.md section 6).

- ``GenerationResult``: what one generation returns.
- chunk acceptance: Static-k emits all ``k`` read-out tokens; ConfAdapt(tau, k_max)
  emits the longest leading run ``y_1..y_n`` with ``max_v P(v | read-out j) > tau`` for
  every ``j <= n``, and ``n >= 1`` always (the first token is the exact greedy token).
- stopping: a chunk is cut after the first stop token, after the token that
  completes a stop string, or at the ``max_new_tokens`` budget.
- attention among the masks: decoded as the model was trained. The checkpoint records
  its training mask in ``config.mtp_attention`` (``mtpsd train-mtp`` writes it): "causal"
  (the paper's; a plain causal mask, the 2D padding mask of HF) or "bidirectional" (the
  BDA ablation: the ``k-1`` masks of one pass attend to each other in both directions;
  :func:`step_attention_mask` builds the 4D mask, sdpa only). A config without the key
  (base models, published checkpoints) is causal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from mtpsd.errors import MtpsdError
from mtpsd.vocab import banned_token_ids

STRATEGIES = ("static", "confadapt", "verify")
ATTENTION_MODES = ("causal", "bidirectional")


@dataclass
class GenerationResult:
    """One generation.

    ``tokens``: new tokens, the stop token included and nothing after it;
    ``chunk_sizes``: tokens emitted per forward pass (``sum == len(tokens)``);
    ``text``: decoded ``tokens`` (special tokens skipped) cut before the first stop
    string, as lm-eval post-processes (``None`` without a tokenizer).
    """

    tokens: list[int]
    chunk_sizes: list[int]
    forward_passes: int
    wall_time_s: float
    prefill_time_s: float
    decode_time_s: float
    stopped_by: str  # "eos" | "stop_string" | "length"
    text: str | None = None
    prompt_tokens: int = 0
    extras: dict = field(default_factory=dict)

    @property
    def eff_k(self) -> float:
        """Tokens per forward pass of this generation."""
        return len(self.tokens) / max(self.forward_passes, 1)

    def to_dict(self) -> dict:
        return {
            "tokens": self.tokens, "chunk_sizes": self.chunk_sizes, "forward_passes": self.forward_passes,
            "wall_time_s": self.wall_time_s, "prefill_time_s": self.prefill_time_s,
            "decode_time_s": self.decode_time_s, "stopped_by": self.stopped_by, "text": self.text,
            "prompt_tokens": self.prompt_tokens, "eff_k": self.eff_k,
        }


def check_args(strategy: str, k: int, tau: float, max_new_tokens: int, mtp_token_id: int | None,
               stop_strings, tokenizer) -> None:
    if strategy not in STRATEGIES:
        raise MtpsdError(f"strategy={strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if not isinstance(k, int) or k < 1:
        raise MtpsdError(f"k={k!r}: must be an integer >= 1")
    if strategy == "confadapt" and not 0.0 <= tau <= 1.0:
        raise MtpsdError(f"tau={tau!r}: must be in [0, 1]")
    if max_new_tokens < 1:
        raise MtpsdError(f"max_new_tokens={max_new_tokens!r}: must be >= 1")
    if k > 1 and mtp_token_id is None:
        raise MtpsdError(f"k={k} needs an <MTP> token: model config has no mtp_token_id")
    if stop_strings and tokenizer is None:
        raise MtpsdError("stop_strings need a tokenizer")


def mtp_attention(model, attention: str | None = None, *, check_implementation: bool = True) -> str:
    """The mask mode to decode with: ``attention`` if given, else the checkpoint's
    ``config.mtp_attention``, else "causal". "bidirectional" needs sdpa (a 4D bool mask) in
    the ``DynamicCache`` decoders (``check_implementation``; the engine runs its own sdpa)."""
    mode = attention if attention is not None else getattr(model.config, "mtp_attention", None) or "causal"
    if mode not in ATTENTION_MODES:
        raise MtpsdError(f"mtp_attention={mode!r}: choose one of {', '.join(ATTENTION_MODES)}")
    if mode == "bidirectional" and check_implementation:
        from mtpsd.flex import attn_implementation_of

        impl = attn_implementation_of(model)
        if impl != "sdpa":
            raise MtpsdError(f"a model trained with bidirectional masks (BDA) is decoded with a 4D mask: "
                             f"load it with attn_implementation='sdpa', not {impl!r}")
    return mode


def step_attention_mask(key_valid: torch.Tensor, n_query: int, n_masks: int) -> torch.Tensor:
    """4D bool mask (B, 1, n_query, kv) of one decoding pass with bidirectional masks (BDA).

    ``key_valid`` (B, kv) marks real keys (cache then this pass; 0 = padding or a hole); the
    pass's queries are the last ``n_query`` keys, its last ``n_masks`` inputs are ``<MTP>``.
    A query attends to real keys at or before itself, and a mask query also to every mask
    of the pass (both directions). Every query also attends to itself, so a padding query
    (attended by nobody) has a non-empty row and gives no NaN.
    """
    B, kv = key_valid.shape
    dev = key_valid.device
    q_abs = torch.arange(kv - n_query, kv, device=dev)[:, None]  # (q, 1) key index of each query
    k_abs = torch.arange(kv, device=dev)[None, :]  # (1, kv)
    allowed = k_abs <= q_abs  # causal
    if n_masks > 0:
        first_mask = kv - n_masks
        allowed = allowed | ((q_abs >= first_mask) & (k_abs >= first_mask))
    mask = allowed[None] & key_valid.bool()[:, None, :]  # (B, q, kv)
    mask = mask | (k_abs == q_abs)[None]
    return mask[:, None]


def default_stop_ids(model, stop_token_ids) -> tuple[int, ...]:
    """``None``: the model's EOS id(s) from its generation config (else config)."""
    if stop_token_ids is not None:
        return tuple(int(t) for t in stop_token_ids)
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None) if gc is not None else None
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        return ()
    return tuple(int(t) for t in (eos if isinstance(eos, (list, tuple)) else [eos]))


def banned_index(model, mtp_token_id: int | None, tokenizer, banned) -> torch.Tensor:
    """LongTensor of ids that may never win (``<MTP>``, vocab padding rows), on the model's device."""
    if banned is None:
        rows = model.get_output_embeddings().weight.shape[0]
        size = len(tokenizer) if tokenizer is not None else int(model.config.vocab_size)
        banned = banned_token_ids(rows, min(size, rows), mtp_token_id)
    return torch.as_tensor(list(banned), dtype=torch.long, device=model.device)


def accept_count(strategy: str, n_cand: int, conf_ok: list[int] | None) -> int:
    """Static: all ``n_cand``; ConfAdapt: leading run of ``conf_ok`` (1 = top-1 prob > tau), >= 1."""
    if strategy != "confadapt":
        return n_cand
    n = 0
    while n < n_cand and conf_ok[n]:
        n += 1
    return max(n, 1)


def readout(logits: torch.Tensor, banned: torch.Tensor, strategy: str, tau: float):
    """Greedy read-out of ``logits`` (n, V) with banned ids at -inf.

    Returns ``(ids, host)``: ``ids`` (n,) on device and a host list, ``host[0]`` the ids
    (argmax of the logits) and, for ConfAdapt, ``host[1]`` the flags ``max softmax > tau``
    (softmax in float32; one sync).
    """
    if banned.numel():
        logits = logits.index_fill(-1, banned, float("-inf"))
    ids = logits.argmax(-1)
    if strategy == "confadapt":
        top = logits.float().softmax(-1).amax(-1)  # (n,)
        return ids, torch.stack([ids, (top > tau).long()]).tolist()
    return ids, [ids.tolist()]


class StopChecker:
    """Cuts a chunk at stop tokens, stop strings and the token budget.

    Stop strings are searched in the decoded *generated* text (special tokens kept, as
    lm-eval's stopping criteria do) over a look-back window of recent tokens: a stop
    string of c characters spans at most c tokens, so a window of ``c + 2`` earlier
    tokens plus the new chunk finds every new occurrence.
    """

    def __init__(self, stop_token_ids, stop_strings, tokenizer, max_new_tokens: int):
        self.stop_ids = frozenset(stop_token_ids)
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.lookback = max((len(s) for s in self.stop_strings), default=0) + 2

    def cut(self, prev: list[int], chunk: list[int]) -> tuple[list[int], str | None]:
        """Return ``(kept part of chunk, stopped_by or None)``."""
        for j, t in enumerate(chunk):
            if t in self.stop_ids:
                chunk, reason = chunk[: j + 1], "eos"
                break
        else:
            reason = None
        if self.stop_strings:
            j = self._stop_string_end(prev, chunk)
            if j is not None:
                chunk, reason = chunk[:j], "stop_string"
        room = self.max_new_tokens - len(prev)
        if len(chunk) >= room and reason is None:
            reason = "length"
        return chunk[:room], reason

    def _has_stop(self, ids: list[int]) -> bool:
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        return any(s in text for s in self.stop_strings)

    def _stop_string_end(self, prev: list[int], chunk: list[int]) -> int | None:
        window = prev[-self.lookback:]
        if not self._has_stop(window + chunk):
            return None
        for j in range(1, len(chunk) + 1):
            if self._has_stop(window + chunk[:j]):
                return j
        return len(chunk)

    def text(self, tokens: list[int]) -> str | None:
        """Decoded tokens cut before the first stop string (lm-eval's post-processing)."""
        if self.tokenizer is None:
            return None
        s = self.tokenizer.decode(tokens, skip_special_tokens=True)
        for term in self.stop_strings:
            s = s.split(term)[0]
        return s


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now() -> float:
    return time.perf_counter()
