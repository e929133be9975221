"""Pieces shared by the single-sequence and batched decoders (method.md section 6).

- ``GenerationResult``: what one generation returns.
- chunk acceptance: Static-k emits all ``k`` read-out tokens; ConfAdapt(tau, k_max)
  emits the longest leading run ``y_1..y_n`` with ``max_v P(v | read-out j) > tau`` for
  every ``j <= n``, and ``n >= 1`` always (the first token is the exact greedy token).
- stopping: a chunk is cut after the first stop token, after the token that
  completes a stop string, or at the ``max_new_tokens`` budget.
- conventions (``decode.convention``, :class:`Convention`): ``project`` (the rules above,
  ``<MTP>`` and vocabulary padding rows banned, ConfAdapt ``p > tau`` in float32) or
  ``authors`` (the authors' public decoding code: full vocabulary, ``p >= tau`` in the
  logits' dtype, stop strings only cut the text afterwards, an end id keeps the rest of its
  chunk, decoding ends once fewer than ``k`` slots of the budget remain). Every generation
  is counted both ways from one token stream (:class:`Tally`).
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
CONVENTIONS = ("project", "authors")
ACCOUNTINGS = ("project", "authors")
CONVENTION_HELP = ("decoding conventions: project (<MTP> and padding rows banned, ConfAdapt p > tau in float32, "
                   "stop strings, end ids and the budget cut the last chunk) or authors (the authors' code: full "
                   "vocabulary, p >= tau in the model's dtype, stop strings only cut the text afterwards, an end id "
                   "keeps the rest of its chunk, decoding ends once fewer than k budget slots remain); results "
                   "report effective k both ways")


@dataclass(frozen=True)
class Convention:
    """The decoding conventions of a run: five switches, all off for ``project`` (this
    project's rules) and all on for ``authors`` (the authors' public decoding code).

    ``full_vocab``: ``<MTP>`` and vocabulary padding rows take part in argmax and softmax;
    ``tau_ge_model_dtype``: ConfAdapt accepts ``p >= tau`` with the softmax and the threshold
    in the logits' dtype (bf16 turns tau 0.9 into 0.8984375), instead of ``p > tau`` in float32;
    the three stopping switches (``stop_strings_after``: stop strings do not stop decoding, the
    text is cut at them afterwards, as lm-eval does; ``keep_chunk_after_end``: an end id keeps
    the rest of its chunk; ``budget_whole_chunks``: decoding ends once fewer than ``k`` slots of
    ``max_new_tokens`` remain) make the *authors'* accounting of :class:`Tally`, which every
    decode computes beside the project's; the convention names the one a result reports.
    """

    name: str = "project"

    def __post_init__(self):
        if self.name not in CONVENTIONS:
            raise MtpsdError(f"convention={self.name!r}: choose one of {', '.join(CONVENTIONS)}")

    @property
    def full_vocab(self) -> bool:
        return self.name == "authors"

    @property
    def tau_ge_model_dtype(self) -> bool:
        return self.name == "authors"

    @property
    def accounting(self) -> str:
        """The accounting (stopping rule) results report: the convention's own."""
        return self.name


def as_convention(convention: str | Convention | None) -> Convention:
    """``None`` = ``project``; a name or a :class:`Convention`."""
    if isinstance(convention, Convention):
        return convention
    return Convention("project" if convention is None else str(convention))


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
    convention: str = "project"
    # both accountings of the same token stream (Tally): {"project"|"authors": {"tokens": n,
    # "forward_passes": p, "stopped_by": reason}}; the convention's own is the fields above
    accounting: dict = field(default_factory=dict)

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
            **({"convention": self.convention, "accounting": self.accounting} if self.accounting else {}),
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


def banned_index(model, mtp_token_id: int | None, tokenizer, banned, convention: Convention | None = None
                 ) -> torch.Tensor:
    """LongTensor of ids that may never win (``<MTP>``, vocab padding rows), on the model's device;
    ``banned`` None = those of the convention (``full_vocab``: none)."""
    if banned is None and convention is not None and convention.full_vocab:
        banned = ()
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


def confident(logits: torch.Tensor, tau, convention: Convention | None = None) -> torch.Tensor:
    """ConfAdapt's flags over the last dim of ``logits``: ``max softmax > tau`` in float32
    (project), or ``>= tau`` with softmax and threshold in the logits' dtype (authors).
    ``tau``: a float or a 0-dim tensor (the engine's buffer)."""
    if convention is not None and convention.tau_ge_model_dtype:
        top = logits.softmax(-1).amax(-1)
        if isinstance(tau, torch.Tensor):
            return top >= tau.to(top.dtype)
        return top >= torch.full((), float(tau), dtype=top.dtype, device=top.device)
    return logits.float().softmax(-1).amax(-1) > tau


def readout(logits: torch.Tensor, banned: torch.Tensor, strategy: str, tau: float,
            convention: Convention | None = None):
    """Greedy read-out of ``logits`` (n, V) with banned ids at -inf.

    Returns ``(ids, host)``: ``ids`` (n,) on device and a host list, ``host[0]`` the ids
    (argmax of the logits) and, for ConfAdapt, ``host[1]`` the flags of :func:`confident`
    (one sync).
    """
    if banned.numel():
        logits = logits.index_fill(-1, banned, float("-inf"))
    ids = logits.argmax(-1)
    if strategy == "confadapt":
        return ids, torch.stack([ids, confident(logits, tau, convention).long()]).tolist()
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

    def cut_authors(self, prev: list[int], chunk: list[int], k: int) -> tuple[list[int], str | None]:
        """The authors' stopping: stop strings ignored, an end id keeps its whole chunk
        ("eos"), and decoding ends once fewer than ``k`` slots of the budget remain
        ("length"). A chunk is cut only where it would overrun the budget itself (a
        budget below ``k``)."""
        chunk = chunk[: self.max_new_tokens - len(prev)]
        if any(t in self.stop_ids for t in chunk):
            return chunk, "eos"
        if self.max_new_tokens - len(prev) - len(chunk) < k:
            return chunk, "length"
        return chunk, None

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


class _View:
    """One accounting of a token stream: the prefix it keeps, per pass, and why it ended."""

    def __init__(self):
        self.tokens: list[int] = []
        self.chunks: list[int] = []
        self.reason: str | None = None
        self.t_end: float | None = None

    def add(self, chunk: list[int], reason: str | None, t: float) -> None:
        self.tokens += chunk
        self.chunks.append(len(chunk))
        if reason is not None:
            self.reason, self.t_end = reason, t


class Tally:
    """One generation's token stream counted both ways (issue 27).

    Every pass's accepted tokens go to :meth:`add`. The *project* accounting cuts at the
    first end id, the token completing a stop string, or the budget (``StopChecker.cut``);
    the *authors'* accounting ignores stop strings, keeps the whole chunk of an end id and
    ends once fewer than ``k`` budget slots remain (``StopChecker.cut_authors``). Decoding
    goes on until both have ended, so both are exact for the same tokens: each is what a
    decoder stopping by that rule alone would have emitted, pass for pass. (Where the
    convention's other switches change tokens, a run of the other convention gives other
    tokens; one decode gives both accountings of the stopping rule only.) The passes after
    the reported accounting ended are extra work of the other one: the result's times stop
    at the reported accounting's end. Without stop strings the authors' accounting never
    ends after the project's, so no pass is added.
    """

    def __init__(self, stop: StopChecker, k: int, convention: Convention):
        self.stop, self.k, self.convention = stop, k, convention
        self.views = {"project": _View(), "authors": _View()}
        self.passes = 0

    @property
    def tokens(self) -> list[int]:
        """The reported accounting's tokens so far."""
        return self.views[self.convention.accounting].tokens

    @property
    def reported_done(self) -> bool:
        return self.views[self.convention.accounting].reason is not None

    def add(self, candidates: list[int]) -> bool:
        """Count one pass's accepted tokens; True once both accountings have ended."""
        self.passes += 1
        t = now()
        p, a = self.views["project"], self.views["authors"]
        if p.reason is None:
            p.add(*self.stop.cut(p.tokens, candidates), t)
        if a.reason is None:
            a.add(*self.stop.cut_authors(a.tokens, candidates, self.k), t)
        return p.reason is not None and a.reason is not None

    def result(self, *, t0: float, t_first: float, prompt_tokens: int, extras: dict | None = None
               ) -> GenerationResult:
        """The reported accounting as a :class:`GenerationResult` (times up to its end), both
        accountings in ``accounting``."""
        v = self.views[self.convention.accounting]
        return GenerationResult(
            tokens=v.tokens, chunk_sizes=v.chunks, forward_passes=len(v.chunks), wall_time_s=v.t_end - t0,
            prefill_time_s=t_first - t0, decode_time_s=v.t_end - t_first, stopped_by=v.reason,
            text=self.stop.text(v.tokens), prompt_tokens=prompt_tokens, extras=dict(extras or {}),
            convention=self.convention.name,
            accounting={name: {"tokens": len(w.tokens), "forward_passes": len(w.chunks), "stopped_by": w.reason}
                        for name, w in self.views.items()},
        )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now() -> float:
    return time.perf_counter()
