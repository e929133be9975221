"""The decoding engine: static KV cache, per-row write positions, fixed shapes (method.md section 6).

    from mtpsd.decoding.engine import DecodeEngine
    eng = DecodeEngine(model, mtp_token_id=model.config.mtp_token_id)
    results = eng.generate([[1, 5, 7], [1, 9]], strategy="confadapt", k=16, tau=0.9, max_new_tokens=256)

Same strategies and outputs as the reference decoders (``single.generate_cached``,
``batch.generate_batch_cached``): Static-k, ConfAdapt(tau, k_max) and lossless verify,
token for token and chunk for chunk, with stop tokens inside a chunk, stop strings,
the ``max_new_tokens`` budget and banned ids (``<MTP>``, vocabulary padding rows).

One pass, row ``b`` (``len_b`` = the slots its cache holds, all real tokens):

- input: the tokens not yet in the cache (the prompt at prefill, then the last emitted
  chunk; for verify the bonus token and the drafts), then ``masks`` ``<MTP>`` tokens;
  ``n_b`` tokens, right-aligned in a row of fixed width ``W`` (left columns are padding);
- real column ``j`` (``0 <= j < n_b``) is written at slot ``len_b + j`` and has position
  id ``len_b + j`` (position == slot: no holes ever); it attends slots ``<= len_b + j``
  (a 4D additive 0 / -inf mask in the model's dtype, read by the engine's own sdpa
  attention, ``attention.engine_sdpa``, selected for the engine's passes only: grouped-query
  heads are packed instead of repeating K/V). Padding columns are written to a dump slot
  no query attends, and attend slot 0 only (so they stay finite);
- bidirectional masks (a BDA-trained model, ``config.mtp_attention``; ``attention``): the
  last ``masks`` columns (every row's ``<MTP>`` inputs: rows are right-aligned and share
  ``masks``) also attend the slots of their row's other masks, later ones included, so
  the masks of one pass attend to each other in both directions, as in training;
- the read-out takes the last ``masks + 1`` columns (verify: ``m_b + masks + 1``), so
  ``logits_to_keep`` is one number for all rows;
- after the pass ``len_b += (tokens of the input that are now part of the text)``:
  the fed chunk (verify: the bonus token and the accepted drafts). The mask slots (and
  rejected drafts) are simply overwritten by the next pass: no crop, no reallocation, and
  each row's cache grows exactly by its own tokens (``extras["cache_len"]``).

Fixed shapes (``pad_shapes``, on with CUDA graphs): batch padded to a power of two
(finished rows stay as all-padding rows until the batch fits a smaller power, then the
cache is compacted), width to a few sizes per mask count (``masks + 1, + 2, + 4, ...``,
``2 * masks + 1``), attended KV length to a multiple of ``kv_bucket``. On CUDA every
decode pass of one shape is one captured ``torch.cuda.CUDAGraph`` (model forward and
read-out), captured lazily once and replayed; prefill is eager. Elsewhere everything is
eager with exact shapes (no padding).

Mask budget (ConfAdapt and verify; static keeps its ``k``): with ``mask_budget = R``
tokens per pass (the GPU's ridge point, where a pass turns compute-bound) and
``B`` live rows, each row gets ``clamp(R // B - 1, 0, k - 1)`` masks, so a pass holds
about ``B * (1 + masks) <= R`` tokens plus the fed chunks; ``None`` (default) = always
``k - 1``. Fewer masks bound ConfAdapt's chunks by ``masks + 1`` and shorten verify's
drafts; verify stays lossless.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field

import torch

from mtpsd.decoding.attention import ENGINE_ATTENTION, packed_mask
from mtpsd.decoding.common import (
    GenerationResult, StopChecker, accept_count, banned_index, check_args, default_stop_ids, mtp_attention, now,
    sync,
)
from mtpsd.decoding.kv_cache import RowCache
from mtpsd.errors import MtpsdError

SLOT_ROUND = 256  # eager allocations grow in steps of this many slots


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


@dataclass
class _Row:
    """One prompt's decoding state."""

    index: int  # position in the prompts list
    prompt_len: int
    stop: StopChecker
    feed: list[int]  # real tokens of the next pass that are not yet in the cache
    phys: int  # row of the cache buffers
    drafts: list[int] = field(default_factory=list)  # verify: proposals fed as real tokens
    cache_len: int = 0  # slots of the cache this row holds
    tokens: list[int] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)


@dataclass
class _Graph:
    graph: object  # torch.cuda.CUDAGraph
    ids: torch.Tensor  # (B, W) static input
    meta: torch.Tensor  # (2, B) static input: len_b, n_b
    out: torch.Tensor  # (1 or 2, B, K) static output


class DecodeEngine:
    """Batched MTP decoding over a static, preallocated KV cache (see the module docstring).

    ``max_batch_size``: rows per pass (more prompts run in consecutive groups);
    ``max_seq_len``: slots per row (prompt + ``max_new_tokens`` + ``2k`` must fit);
    ``k_max``: the largest ``k`` accepted; ``cuda_graphs``: ``None`` = on for CUDA models;
    ``pad_shapes``: ``None`` = as ``cuda_graphs`` (padding also works eagerly, for tests);
    ``mask_budget``: tokens per pass for ConfAdapt/verify (``None`` = off);
    ``kv_bucket``: padded attended KV lengths are multiples of this;
    ``attention``: mask among the ``<MTP>`` inputs, "causal" or "bidirectional" (BDA);
    ``None`` = the model's ``config.mtp_attention`` (else causal).
    With CUDA graphs the buffers are allocated once at full size on first use; eagerly
    they grow with the largest request seen. Reuse one engine across calls.
    """

    def __init__(self, model, *, mtp_token_id: int | None, max_batch_size: int = 64, max_seq_len: int = 2048,
                 k_max: int = 16, cuda_graphs: bool | None = None, mask_budget: int | None = None,
                 pad_shapes: bool | None = None, kv_bucket: int = 256, attention: str | None = None):
        self.model = model
        # the engine runs its own sdpa (attention.engine_sdpa) whatever the model's implementation
        self.attention = mtp_attention(model, attention, check_implementation=False)
        self._bda = self.attention == "bidirectional"
        self.device = torch.device(model.device)
        self.mtp_token_id = None if mtp_token_id is None else int(mtp_token_id)
        for name, v in (("max_batch_size", max_batch_size), ("max_seq_len", max_seq_len), ("k_max", k_max),
                        ("kv_bucket", kv_bucket)):
            if not isinstance(v, int) or v < 1:
                raise MtpsdError(f"{name}={v!r}: must be an integer >= 1")
        if mask_budget is not None and (not isinstance(mask_budget, int) or mask_budget < 1):
            raise MtpsdError(f"mask_budget={mask_budget!r}: must be None or an integer >= 1")
        self.max_batch_size, self.max_seq_len, self.k_max = max_batch_size, max_seq_len, k_max
        self.mask_budget, self.kv_bucket = mask_budget, kv_bucket
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else bool(cuda_graphs)
        if self.cuda_graphs and self.device.type != "cuda":
            raise MtpsdError(f"cuda_graphs=True needs a CUDA model, this one is on {self.device}")
        self.pad_shapes = self.cuda_graphs if pad_shapes is None else bool(pad_shapes)
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.num_layers = int(cfg.num_hidden_layers)
        heads = int(cfg.num_attention_heads)
        self._n_rep = heads // int(getattr(cfg, "num_key_value_heads", None) or heads)
        self._attn_config = model.config
        other = sorted(set(getattr(cfg, "layer_types", None) or ["full_attention"]) - {"full_attention"})
        if other:  # the engine's mask is full causal attention; a sliding window would be silently ignored
            raise MtpsdError(f"DecodeEngine supports full-attention decoders only; this model has {other} layers")
        head = model.get_output_embeddings().weight
        self._bias = torch.zeros(head.shape[0], dtype=head.dtype, device=self.device)  # 0 / -inf: banned ids
        self._tau = torch.zeros((), dtype=torch.float32, device=self.device)
        self._zero = torch.zeros((), dtype=head.dtype, device=self.device)  # additive mask values
        self._neg_inf = torch.full((), float("-inf"), dtype=head.dtype, device=self.device)
        self._cache: RowCache | None = None
        self._graphs: dict[tuple, _Graph] = {}
        self._pool = None
        self.counters = {"passes": 0, "eager_passes": 0, "graph_replays": 0, "graph_captures": 0,
                         "compactions": 0}

    # ---- public --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: list[list[int]], *, strategy: str = "confadapt", k: int = 16, tau: float = 0.9,
                 max_new_tokens: int = 256, stop_token_ids=None, stop_strings=(), tokenizer=None,
                 banned_token_ids=None, accept_fn=None) -> list[GenerationResult]:
        """Decode ``prompts`` (lists of ids); one result per prompt, in order.

        Arguments as ``mtpsd.decoding.generate``. ``accept_fn(row, step, n_cand) -> 1..n_cand``
        (static/ConfAdapt only) replaces the acceptance rule: ``row`` = prompt index,
        ``step`` = the row's pass index. ``extras``: ``batch_size`` (of the group),
        ``cache_len`` (the row's final cache length: prompt + fed-back tokens, i.e. every
        token but those of its last pass). ``wall_time_s`` runs from the group's start to
        the row's last token.
        """
        check_args(strategy, k, tau, max_new_tokens, self.mtp_token_id, stop_strings, tokenizer)
        if k > self.k_max:
            raise MtpsdError(f"k={k} exceeds this engine's k_max={self.k_max}")
        if accept_fn is not None and strategy == "verify":
            raise MtpsdError("accept_fn replaces static/confadapt acceptance; verify accepts what matches greedy")
        prompts = [[int(t) for t in p] for p in prompts]
        if not prompts or any(len(p) == 0 for p in prompts):
            raise MtpsdError("generate needs at least one prompt and no empty prompt")
        need = max(map(len, prompts)) + max_new_tokens + 2 * k
        if need > self.max_seq_len:
            raise MtpsdError(f"longest prompt ({max(map(len, prompts))}) + max_new_tokens ({max_new_tokens}) + 2k "
                             f"({2 * k}) = {need} slots exceed max_seq_len={self.max_seq_len}")
        banned = banned_index(self.model, self.mtp_token_id, tokenizer, banned_token_ids)
        self._bias.zero_()
        if banned.numel():
            self._bias[banned] = float("-inf")
        self._tau.fill_(float(tau))
        stop_ids = default_stop_ids(self.model, stop_token_ids)
        results: list[GenerationResult] = []
        for start in range(0, len(prompts), self.max_batch_size):
            group = prompts[start: start + self.max_batch_size]
            rows = [_Row(start + i, len(p), StopChecker(stop_ids, stop_strings, tokenizer, max_new_tokens), p, i)
                    for i, p in enumerate(group)]
            self._reserve(len(group), need)
            results += self._decode(rows, strategy, k, accept_fn)
        return results

    def masks_per_row(self, strategy: str, k: int, live_rows: int) -> int:
        """``k - 1``; with a mask budget R (ConfAdapt, verify): ``clamp(R // live_rows - 1, 0, k - 1)``."""
        if self.mask_budget is None or strategy == "static":
            return k - 1
        return min(max(self.mask_budget // live_rows - 1, 0), k - 1)

    # ---- the decoding loop ---------------------------------------------------------------
    def _decode(self, rows: list[_Row], strategy: str, k: int, accept_fn) -> list[GenerationResult]:
        verify, conf = strategy == "verify", strategy == "confadapt"
        done: dict[int, GenerationResult] = {}
        active = rows
        n_phys = self._batch_bucket(len(rows))
        sync(self.device)
        t0 = now()
        t_first = None
        prefill = True
        while active:
            masks = self.masks_per_row(strategy, k, len(active))
            seqs = {r.phys: r.feed + r.drafts + [self.mtp_token_id or 0] * masks for r in active}
            W = max(map(len, seqs.values()))
            if self.pad_shapes and not prefill:
                W = self._width_bucket(W, masks)
            K = max(len(r.drafts) for r in active) + masks + 1
            kv = max(r.cache_len + len(seqs[r.phys]) for r in active)
            if self.pad_shapes:
                kv = min(_round_up(kv, self.kv_bucket), self._cache.slots)
            pad = self.mtp_token_id or 0
            rows_in = [[pad] * (W + 2) for _ in range(n_phys)]  # per row: W ids, len_b, n_b
            for r in active:
                s = seqs[r.phys]
                rows_in[r.phys][W - len(s):] = s + [r.cache_len, len(s)]
            dense = n_phys == len(active) and all(len(q) == W for q in seqs.values())  # no padding column
            bda = masks if self._bda else 0
            out = self._run(rows_in, kv, K, conf, eager=prefill or not self.cuda_graphs, dense=dense,
                            bda=bda).tolist()
            prefill = False
            if t_first is None:
                t_first = now()
            finished = []
            for r in active:
                cand = out[0][r.phys]
                if verify:
                    new = self._verify_step(r, cand[K - (len(r.drafts) + masks + 1):], masks)
                else:
                    n_cand = masks + 1
                    if accept_fn is not None:
                        n = self._checked(accept_fn(r.index, len(r.chunks), n_cand), n_cand)
                    else:
                        n = accept_count(strategy, n_cand, out[1][r.phys][K - n_cand:] if conf else None)
                    r.cache_len += len(r.feed)
                    new = cand[K - n_cand:][:n]
                    r.feed = new
                chunk, reason = r.stop.cut(r.tokens, new)
                r.tokens += chunk
                r.chunks.append(len(chunk))
                if reason is not None:
                    sync(self.device)
                    done[r.index] = self._result(r, reason, t0, t_first, len(rows))
                    finished.append(r)
            if finished:
                active = [r for r in active if r not in finished]
                n_phys = self._compact(active, n_phys)
        return [done[r.index] for r in rows]

    @staticmethod
    def _verify_step(r: _Row, g: list[int], masks: int) -> list[int]:
        """``g``: greedy tokens after the bonus token and each draft, then ``masks`` proposals."""
        m = len(r.drafts)
        a = 0
        while a < m and r.drafts[a] == g[a]:
            a += 1
        r.cache_len += len(r.feed) + a  # the bonus token (or prompt) and the accepted drafts
        r.feed = [g[a]]
        r.drafts = g[m + 1:] if a == m and masks > 0 else []
        return g[: a + 1]

    @staticmethod
    def _checked(n, n_cand: int) -> int:
        try:
            count = operator.index(n)
        except TypeError:
            count = 0
        if not 1 <= count <= n_cand:
            raise MtpsdError(f"accept_fn returned {n!r}: must be an integer in 1..{n_cand}")
        return count

    @staticmethod
    def _result(r: _Row, reason: str, t0: float, t_first: float, batch: int) -> GenerationResult:
        t_end = now()
        return GenerationResult(
            tokens=r.tokens, chunk_sizes=r.chunks, forward_passes=len(r.chunks), wall_time_s=t_end - t0,
            prefill_time_s=t_first - t0, decode_time_s=t_end - t_first, stopped_by=reason,
            text=r.stop.text(r.tokens), prompt_tokens=r.prompt_len,
            extras={"batch_size": batch, "cache_len": r.cache_len},
        )

    # ---- shapes and buffers --------------------------------------------------------------
    def _batch_bucket(self, n: int) -> int:
        return min(_pow2(n), self._cache.rows) if self.pad_shapes else n

    @staticmethod
    def _width_bucket(w: int, masks: int) -> int:
        """Smallest of ``masks + 1, masks + 2, masks + 4, ..., 2 * masks + 1`` that holds ``w``."""
        sizes = sorted({masks + (1 << i) for i in range((masks + 1).bit_length()) if (1 << i) <= masks + 1}
                       | {2 * masks + 1})
        return next((s for s in sizes if s >= w), w)

    def _reserve(self, rows: int, slots: int) -> None:
        """Make the buffers hold ``rows`` rows of ``slots`` slots (graphs: full size, once)."""
        c = self._cache
        if c is not None and c.rows >= rows and c.slots >= slots:
            return
        if self.cuda_graphs:
            rows, slots = self.max_batch_size, self.max_seq_len
        else:
            rows = max(min(_pow2(rows), max(self.max_batch_size, rows)) if self.pad_shapes else rows,
                       c.rows if c else 0)
            slots = min(max(_round_up(slots, SLOT_ROUND), c.slots if c else 0), self.max_seq_len)
        self._cache = None  # free the old buffers first
        self._graphs.clear()
        self._cache = RowCache(self.num_layers, rows, slots)

    def _compact(self, active: list[_Row], n_phys: int) -> int:
        """Move the live rows to the first buffer rows when the batch fits a smaller shape."""
        target = self._batch_bucket(len(active)) if active else 0
        if not active or target >= n_phys and self.pad_shapes:
            return n_phys
        keep = sorted(r.phys for r in active)
        if keep != list(range(len(keep))):
            used = max(r.cache_len for r in active)
            self._cache.compact(torch.tensor(keep, dtype=torch.long, device=self.device), used)
            self.counters["compactions"] += 1
            remap = {p: i for i, p in enumerate(keep)}
            for r in active:
                r.phys = remap[r.phys]
        return target

    # ---- one pass ------------------------------------------------------------------------
    def _run(self, rows_in: list[list[int]], kv: int, K: int, conf: bool, eager: bool,
             dense: bool = False, bda: int = 0) -> torch.Tensor:
        """One pass over ``rows_in`` (B rows of W ids, then len_b, n_b): eager, or the captured
        graph of its shape (captured on first use). ``bda``: the trailing mask columns that
        attend to each other both ways (0 = causal)."""
        self.counters["passes"] += 1
        host = torch.tensor(rows_in, dtype=torch.long)  # (B, W + 2)
        if eager:
            self.counters["eager_passes"] += 1
            x = host.to(self.device)
            return self._pass(x[:, :-2], x[:, -2:].t(), kv, K, conf, dense, bda)
        key = (host.shape[0], host.shape[1] - 2, kv, K, conf, bda)
        g = self._graphs.get(key)
        if g is None:
            x = host.to(self.device)
            ids, meta = x[:, :-2].contiguous(), x[:, -2:].t().contiguous()  # the graph's static inputs
            try:
                g = self._graphs[key] = self._capture(ids, meta, kv, K, conf, bda)
            except RuntimeError as e:  # a model whose forward cannot be captured: stay correct, go eager
                warnings.warn(f"CUDA graph capture failed ({e}); this engine decodes eagerly from now on")
                self.cuda_graphs = False
                self.counters["eager_passes"] += 1
                return self._pass(ids, meta, kv, K, conf, bda=bda)
        else:
            g.ids.copy_(host[:, :-2], non_blocking=True)
            g.meta.copy_(host[:, -2:].t(), non_blocking=True)
        g.graph.replay()
        self.counters["graph_replays"] += 1
        return g.out

    def _capture(self, ids: torch.Tensor, meta: torch.Tensor, kv: int, K: int, conf: bool, bda: int = 0) -> _Graph:
        """Capture ``_pass`` on these static inputs. The warm-up runs compute the very pass
        (cache writes are idempotent). Graphs share one memory pool: they replay one at a
        time, their outputs are read right after replay, and everything that must survive
        between passes (KV buffers, static inputs, bias, tau) lives outside the pool."""
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._pass(ids, meta, kv, K, conf, bda=bda)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._pass(ids, meta, kv, K, conf, bda=bda)
        self.counters["graph_captures"] += 1
        return _Graph(graph, ids, meta, out)

    def _pass(self, ids: torch.Tensor, meta: torch.Tensor, kv: int, K: int, conf: bool,
              dense: bool = False, bda: int = 0) -> torch.Tensor:
        """Forward ``ids`` (B, W) with ``meta`` = (len_b, n_b) per row; return the read-out of the
        last ``K`` columns: ``(1, B, K)`` argmax ids, or for ConfAdapt ``(2, B, K)`` ids and
        ``max softmax > tau`` flags. Shapes depend only on (B, W, kv, K): capturable.
        ``dense``: every column is real (``n_b == W``), which skips the padding arithmetic.
        ``bda``: the last ``bda`` columns (every row's masks) attend each other's slots too."""
        B, W = ids.shape
        cache = self._cache
        lens, n = meta[0], meta[1]
        cache.kv_len = kv
        if dense:
            pos = lens[:, None] + torch.arange(W, device=ids.device)  # (B, W)
            cache.write_index = pos[:, None, :, None]
        else:
            j = torch.arange(W, device=ids.device) - (W - n)[:, None]  # (B, W): index among real tokens
            real = j >= 0
            slot = lens[:, None] + j  # (B, W)
            cache.write_index = torch.where(real, slot, cache.dump_slot)[:, None, :, None]  # (B, 1, W, 1)
            pos = torch.where(real, slot, 0)  # (B, W); padding: position 0, attends slot 0 only
        slots = torch.arange(kv, device=ids.device)
        allowed = slots <= pos[..., None]  # (B, W, kv)
        if bda:
            end = lens + n  # (B,) one past the row's last slot of this pass
            mask_keys = (slots >= (end - bda)[:, None]) & (slots < end[:, None])  # (B, kv): the row's masks
            mask_queries = torch.arange(W, device=ids.device) >= W - bda  # (W,)
            allowed = allowed | (mask_queries[None, :, None] & mask_keys[:, None, :])
        # additive 0 / -inf mask in the model's dtype, rows repeated for the grouped query heads
        # (attention.engine_sdpa packs them into the query axis: no K/V copy)
        mask = packed_mask(allowed, self._n_rep, self._zero, self._neg_inf)  # (B, 1, n_rep * W, kv)
        cfg = self._attn_config
        before = cfg._attn_implementation
        cfg._attn_implementation = ENGINE_ATTENTION  # for this forward only
        try:
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                                use_cache=True, logits_to_keep=K).logits  # (B, K, V)
        finally:
            cfg._attn_implementation = before
        logits = logits.add_(self._bias)  # -inf at banned ids
        if conf:
            probs, top = logits.float().softmax(-1).max(-1)  # (B, K)
            return torch.stack([top, (probs > self._tau).long()])
        return logits.argmax(-1)[None]


def engine_for(model, mtp_token_id: int | None, *, batch: int, seq_len: int, holder=None,
               attention: str | None = None, **engine_kwargs) -> DecodeEngine:
    """The engine kept on ``holder`` (default: the model) for ``batch`` rows of ``seq_len`` slots.

    Created on first use and replaced by a larger one when a request needs more rows or
    slots (rows grow to powers of two, slots to multiples of 1024, so this is rare);
    ``engine_kwargs`` (``cuda_graphs``, ``mask_budget``, ...) go to ``DecodeEngine``;
    ``attention`` (None = ``config.mtp_attention``): an engine of another mask is replaced.
    """
    holder = model if holder is None else holder
    eng = holder.__dict__.get("_mtpsd_engine")
    mode = mtp_attention(model, attention, check_implementation=False)
    if (eng is None or eng.model is not model or eng.mtp_token_id != mtp_token_id or eng.max_batch_size < batch
            or eng.max_seq_len < seq_len or eng.device != torch.device(model.device) or eng.attention != mode):
        old = (eng.max_batch_size, eng.max_seq_len) if eng is not None and eng.model is model else (1, 0)
        eng = None  # free the old buffers before allocating the new ones
        holder.__dict__.pop("_mtpsd_engine", None)
        eng = DecodeEngine(model, mtp_token_id=mtp_token_id, max_batch_size=max(_pow2(batch), old[0]),
                           max_seq_len=max(_round_up(seq_len, 1024), old[1]), k_max=1 << 30, attention=mode,
                           **engine_kwargs)
        holder.__dict__["_mtpsd_engine"] = eng
    return eng
