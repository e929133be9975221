"""The decoding engine: static KV cache, per-row write positions, CUDA graphs (method.md section 6).

    from mtpsd.decoding.engine import DecodeEngine
    eng = DecodeEngine(model, mtp_token_id=model.config.mtp_token_id)
    results = eng.generate([[1, 5, 7], [1, 9]], strategy="confadapt", k=16, tau=0.9, max_new_tokens=256)

Same strategies and outputs as the reference decoders (``single.generate_cached``,
``batch.generate_batch_cached``): Static-k, ConfAdapt(tau, k_max) and lossless verify,
token for token and chunk for chunk, with stop tokens inside a chunk, stop strings,
the ``max_new_tokens`` budget and banned ids (``<MTP>``, vocabulary padding rows), under
either decoding convention (``common.Convention``: ``project`` or ``authors``; the authors'
ConfAdapt compares ``p >= tau`` in the logits' dtype, a switch fixed per captured graph).

One pass has three inputs, each its own buffer: ``ids`` (B, W) token ids, ``lens`` (B,)
the slots row ``b``'s cache holds (all real tokens) and ``n`` (B,) how many of the row's
``W`` columns are real. A row's real columns are right-aligned: the tokens not yet in the
cache (the prompt, then the last emitted chunk; for verify the bonus token and the
drafts), then ``masks`` ``<MTP>`` tokens. Real column ``j`` (``0 <= j < n_b``) is written
at slot ``lens_b + j`` with position id ``lens_b + j`` (position == slot: no holes) and
attends slots ``<= lens_b + j``. Every other column (left padding, and every column of a
padding row, ``n_b = 0``) is written to the dump slot no query reads, and attends slot 0
only, so it stays finite. The mask is additive (0 / -inf) in the query's dtype, packed for
grouped-query heads (``attention.engine_sdpa``). Bidirectional masks (a BDA-trained model,
``config.mtp_attention``): the last ``masks`` columns also attend their row's other mask
slots. The read-out is the last ``K`` columns (``masks + 1``; verify: ``drafts + masks +
1``): argmax ids and the flags ``max softmax > tau`` (both always, so one graph serves
every strategy of a shape). After the pass ``lens_b`` grows by the tokens that are now
part of the text; mask slots (and rejected drafts) are overwritten by the next pass.

Prefill runs in passes of at most ``prefill_chunk`` columns per row (the mask of one
pass is ``B x n_rep*W x kv``, never ``B x T x T`` for a long prompt batch):
:func:`pass_bytes` bounds one pass's working memory.

Modes (``graphs``):

- eager (the CPU default): every pass runs as Python, at exact shapes;
- graphs (the CUDA default): shapes are padded to a few buckets (batch to a power of two,
  finished rows staying as padding rows until the batch fits a smaller power; width to
  ``masks + 1, + 2, + 4, ..., 2 * masks + 1``, one width for passes of at most ``FLAT_TOKENS``
  tokens; attended KV length to a multiple of
  ``kv_bucket``, coarser as it grows: at most 1/8 more slots than needed) and every decode pass of one shape is a graph captured once and replayed
  (``graphs.CudaGraphs``; ``graph_backend`` swaps the backend, e.g. the tests' CPU
  emulator). Prefill is eager. A capture that fails raises and names the switch to eager.

Both modes run the same pass code; only the shape rounding differs. Buffers grow with the
largest request (rows to a power of two, slots to a multiple of ``SLOT_ROUND``); growing
drops the captured graphs (their addresses would be stale).

Mask budget (ConfAdapt and verify; static keeps its ``k``): with ``mask_budget = R``
tokens per pass (the GPU's ridge point) and ``B`` live rows, each row gets
``clamp(R // B - 1, 0, k - 1)`` masks; ``None`` (default) = always ``k - 1``.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from mtpsd.decoding.attention import ENGINE_ATTENTION, packed_mask
from mtpsd.decoding.common import (
    GenerationResult, StopChecker, Tally, accept_count, as_convention, banned_index, check_args, confident,
    default_stop_ids, mtp_attention, now, sync,
)
from mtpsd.decoding.graphs import Captured, CudaGraphs
from mtpsd.decoding.kv_cache import RowCache
from mtpsd.decoding.sizes import KV_BUCKET, PREFILL_CHUNK, SLOT_ROUND
from mtpsd.errors import MtpsdError

# sdpa kernels the engine's passes may use, chosen explicitly: memory-efficient (CUDA) or
# flash (CPU) with the custom mask, math as the fallback. Not cuDNN attention: with custom
# masks it has silently returned wrong results, also under CUDA graphs (pytorch/pytorch
# #193893 greedy generation corrupted on sm_100, #191612 mask dtype misread;
# NVIDIA/TransformerEngine#2344 disables it under CUDA graphs for an illegal memory access).
SDPA_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
FLAT_TOKENS = 64  # graphs: passes of at most this many tokens get one width (see width_bucket)
SWITCH = "decode without CUDA graphs: --engine eager (config decode.engine: eager, or MTPSD_ENGINE=eager)"


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def width_bucket(w: int, masks: int, rows: int = 1 << 30) -> int:
    """Smallest of ``masks + 1, masks + 2, masks + 4, ..., 2 * masks + 1`` that holds ``w``; just
    ``2 * masks + 1`` when ``rows`` such rows carry at most ``FLAT_TOKENS`` tokens (a pass that
    small is memory-bound on any GPU: a narrower width would cost the same and take a graph)."""
    if rows * (2 * masks + 1) <= FLAT_TOKENS:
        return max(2 * masks + 1, w)
    sizes = sorted({masks + (1 << i) for i in range((masks + 1).bit_length()) if (1 << i) <= masks + 1}
                   | {2 * masks + 1})
    return next((s for s in sizes if s >= w), w)




@dataclass
class _Row:
    """One prompt's decoding state."""

    index: int  # position in the prompts list
    prompt_len: int
    tally: Tally  # the tokens emitted, counted both ways (common.Tally)
    feed: list[int]  # real tokens of the next pass that are not yet in the cache
    phys: int  # row of the cache buffers
    drafts: list[int] = field(default_factory=list)  # verify: proposals fed as real tokens
    cache_len: int = 0  # slots of the cache this row holds


class DecodeEngine:
    """Batched MTP decoding over a static, preallocated KV cache (see the module docstring).

    ``max_batch_size``: rows per pass (more prompts run in consecutive groups);
    ``max_seq_len``: slots per row (prompt + ``max_new_tokens`` + ``2k`` must fit);
    ``k_max``: the largest ``k`` accepted; ``graphs``: ``None`` = on for CUDA models;
    ``graph_backend``: capture/replay backend (default ``graphs.CudaGraphs``);
    ``mask_budget``: tokens per pass for ConfAdapt/verify (``None`` = off);
    ``kv_bucket``: with graphs, attended KV lengths are multiples of this;
    ``prefill_chunk``: most prompt columns per row in one pass;
    ``attention``: mask among the ``<MTP>`` inputs, "causal" or "bidirectional" (BDA);
    ``None`` = the model's ``config.mtp_attention`` (else causal). Reuse one engine across calls.
    """

    def __init__(self, model, *, mtp_token_id: int | None, max_batch_size: int = 64, max_seq_len: int = 2048,
                 k_max: int = 16, graphs: bool | None = None, graph_backend=None, mask_budget: int | None = None,
                 kv_bucket: int = KV_BUCKET, prefill_chunk: int = PREFILL_CHUNK, attention: str | None = None):
        self.model = model
        # the engine runs its own sdpa (attention.engine_sdpa) whatever the model's implementation
        self.attention = mtp_attention(model, attention, check_implementation=False)
        self.device = torch.device(model.device)
        self.mtp_token_id = None if mtp_token_id is None else int(mtp_token_id)
        for name, v in (("max_batch_size", max_batch_size), ("max_seq_len", max_seq_len), ("k_max", k_max),
                        ("kv_bucket", kv_bucket), ("prefill_chunk", prefill_chunk)):
            if not isinstance(v, int) or v < 1:
                raise MtpsdError(f"{name}={v!r}: must be an integer >= 1")
        if mask_budget is not None and (not isinstance(mask_budget, int) or mask_budget < 1):
            raise MtpsdError(f"mask_budget={mask_budget!r}: must be None or an integer >= 1")
        self.max_batch_size, self.max_seq_len, self.k_max = max_batch_size, max_seq_len, k_max
        self.mask_budget, self.kv_bucket, self.prefill_chunk = mask_budget, kv_bucket, prefill_chunk
        self.graphs = (self.device.type == "cuda" or graph_backend is not None) if graphs is None else bool(graphs)
        if self.graphs and graph_backend is None:
            if self.device.type != "cuda":
                raise MtpsdError(f"CUDA graphs need a CUDA model, this one is on {self.device}; {SWITCH}")
            graph_backend = CudaGraphs(self.device)
        self.backend = graph_backend if self.graphs else None
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        heads = int(cfg.num_attention_heads)
        self._n_rep = heads // int(getattr(cfg, "num_key_value_heads", None) or heads)
        other = sorted(set(getattr(cfg, "layer_types", None) or ["full_attention"]) - {"full_attention"})
        if other:  # the engine's mask is full causal attention; a sliding window would be silently ignored
            raise MtpsdError(f"DecodeEngine supports full-attention decoders only; this model has {other} layers")
        dtype = model.get_output_embeddings().weight.dtype
        # read by captured passes: allocated once, updated in place
        self._bias = torch.zeros(model.get_output_embeddings().weight.shape[0], dtype=dtype,
                                 device=self.device)  # 0 / -inf at banned ids
        self._tau = torch.zeros((), dtype=torch.float32, device=self.device)  # project: p > tau in float32
        self._tau_model = torch.zeros((), dtype=dtype, device=self.device)  # authors: p >= tau in the logits' dtype
        self._zero = torch.zeros((), dtype=dtype, device=self.device)  # additive mask values
        self._neg_inf = torch.full((), float("-inf"), dtype=dtype, device=self.device)
        self._cache: RowCache | None = None
        self._graphs: dict[tuple, Captured] = {}
        self.counters = {"passes": 0, "eager_passes": 0, "graph_replays": 0, "graph_captures": 0,
                         "compactions": 0, "capture_s": 0.0}

    @property
    def mode(self) -> str:
        """"graphs" or "eager" (what results record as their engine)."""
        return "graphs" if self.graphs else "eager"

    # ---- public --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: list[list[int]], *, strategy: str = "confadapt", k: int = 16, tau: float = 0.9,
                 max_new_tokens: int = 256, stop_token_ids=None, stop_strings=(), tokenizer=None,
                 banned_token_ids=None, accept_fn=None, convention=None) -> list[GenerationResult]:
        """Decode ``prompts`` (lists of ids); one result per prompt, in order.

        Arguments as ``mtpsd.decoding.generate`` (``convention``: "project" | "authors").
        ``accept_fn(row, step, n_cand) -> 1..n_cand`` (static/ConfAdapt only) replaces the
        acceptance rule: ``row`` = prompt index,
        ``step`` = the row's pass index. ``extras``: ``batch_size`` (of the group),
        ``cache_len`` (the row's final cache length: prompt + fed-back tokens, i.e. every
        token but those of its last pass), ``engine``. ``wall_time_s`` runs from the group's
        start to the row's last token.
        """
        conv = as_convention(convention)
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
        banned = banned_index(self.model, self.mtp_token_id, tokenizer, banned_token_ids, conv)
        self._bias.zero_()
        if banned.numel():
            self._bias[banned] = float("-inf")
        self._tau.fill_(float(tau))
        self._tau_model.fill_(float(tau))
        stop_ids = default_stop_ids(self.model, stop_token_ids)
        results: list[GenerationResult] = []
        for start in range(0, len(prompts), self.max_batch_size):
            group = prompts[start: start + self.max_batch_size]
            rows = [_Row(start + i, len(p), Tally(StopChecker(stop_ids, stop_strings, tokenizer, max_new_tokens), k,
                                                  conv), p, i)
                    for i, p in enumerate(group)]
            self._reserve(len(group), need)
            results += self._decode(rows, strategy, k, accept_fn, conv.tau_ge_model_dtype)
        return results

    @torch.no_grad()
    def prepare(self, *, batch: int, strategy: str, k: int, seq_len: int, convention=None) -> int:
        """Allocate for ``batch`` rows of ``seq_len`` slots and, with graphs, capture every decode
        pass shape a ``generate`` call of that size can meet (batch buckets, widths, mask
        counts, KV buckets; ``convention`` as ``generate``'s), so no capture happens inside a timed
        region. The captures run on padding rows only (nothing is written to the cache). Returns
        the graphs captured."""
        ge = as_convention(convention).tau_ge_model_dtype
        self._reserve(batch, seq_len)
        if not self.graphs:
            return 0
        before = self.counters["graph_captures"]
        rows = {self._batch_bucket(b) for b in range(1, batch + 1)}
        masks_set = {self.masks_per_row(strategy, k, b) for b in range(1, batch + 1)}
        kvs = {self._kv_bucket(kv) for kv in range(1, min(seq_len, self._cache.slots) + 1)}
        keys = set()
        for masks in masks_set:
            # a pass feeds the last chunk (static: all k) or the bonus token and drafts, then the masks
            widths = [2 * masks + 1] if strategy == "static" else range(masks + 1, 2 * masks + 2)
            bda = masks if self.attention == "bidirectional" else 0
            keys |= {(B, width_bucket(w, masks, B), kv, w if strategy == "verify" else masks + 1, bda, ge)
                     for B in rows for w in widths for kv in kvs}
        for key in sorted(keys - self._graphs.keys()):
            B, W = key[:2]
            blank = (torch.zeros((B, W), dtype=torch.long, device=self.device),
                     torch.zeros(B, dtype=torch.long, device=self.device),
                     torch.zeros(B, dtype=torch.long, device=self.device))  # padding rows only
            self._graphs[key] = self._capture(key, blank)
        return self.counters["graph_captures"] - before

    def masks_per_row(self, strategy: str, k: int, live_rows: int) -> int:
        """``k - 1``; with a mask budget R (ConfAdapt, verify): ``clamp(R // live_rows - 1, 0, k - 1)``."""
        if self.mask_budget is None or strategy == "static":
            return k - 1
        return min(max(self.mask_budget // live_rows - 1, 0), k - 1)

    # ---- the decoding loop ---------------------------------------------------------------
    def _decode(self, rows: list[_Row], strategy: str, k: int, accept_fn, ge: bool) -> list[GenerationResult]:
        """Decode one group until every row's two accountings have ended (``common.Tally``);
        ``ge``: the authors' ConfAdapt threshold compare (``Convention.tau_ge_model_dtype``)."""
        verify = strategy == "verify"
        done: dict[int, GenerationResult] = {}
        active = rows
        n_phys = self._batch_bucket(len(rows))
        sync(self.device)
        t0 = now()
        self._prefill(rows, n_phys)
        t_first = None
        while active:
            masks = self.masks_per_row(strategy, k, len(active))
            seqs = {r.phys: r.feed + r.drafts + [self.mtp_token_id or 0] * masks for r in active}
            W = max(map(len, seqs.values()))
            first = t_first is None  # its width is the prompt's: eager, like prefill
            if self.graphs and not first:
                W = width_bucket(W, masks, n_phys)
            K = max(len(r.drafts) for r in active) + masks + 1
            kv = self._kv_bucket(max(r.cache_len + len(seqs[r.phys]) for r in active))
            out = self._run(self._inputs(active, seqs, n_phys, W), kv, K, masks if self.attention == "bidirectional"
                            else 0, eager=first or not self.graphs, ge=ge).tolist()
            if first:
                t_first = now()
            finished = []
            for r in active:
                ids, ok = out[0][r.phys], out[1][r.phys]
                if verify:
                    new = self._verify_step(r, ids[K - (len(r.drafts) + masks + 1):], masks)
                else:
                    n_cand = masks + 1
                    if accept_fn is not None:
                        n = self._checked(accept_fn(r.index, r.tally.passes, n_cand), n_cand)
                    else:
                        n = accept_count(strategy, n_cand, ok[K - n_cand:])
                    r.cache_len += len(r.feed)
                    new = ids[K - n_cand:][:n]
                    r.feed = new
                if r.tally.add(new):
                    sync(self.device)
                    done[r.index] = self._result(r, t0, t_first, len(rows))
                    finished.append(r)
            if finished:
                active = [r for r in active if r not in finished]
                n_phys = self._compact(active, n_phys)
        return [done[r.index] for r in rows]

    def _prefill(self, rows: list[_Row], n_phys: int) -> None:
        """Feed each prompt but its last ``prefill_chunk`` tokens in passes of at most
        ``prefill_chunk`` columns per row (eager; the read-out is not used)."""
        C = self.prefill_chunk
        while todo := [r for r in rows if len(r.feed) > C]:
            parts = {r.phys: r.feed[: min(len(r.feed) - C, C)] for r in todo}
            kv = self._kv_bucket(max(r.cache_len + len(parts[r.phys]) for r in todo))
            self._run(self._inputs(todo, parts, n_phys, max(map(len, parts.values()))), kv, 1, 0, eager=True,
                      ge=False)
            for r in todo:
                r.cache_len += len(parts[r.phys])
                r.feed = r.feed[len(parts[r.phys]):]

    def _inputs(self, live: list[_Row], seqs: dict[int, list[int]], n_phys: int, W: int):
        """Host tensors ``ids`` (n_phys, W), ``lens`` and ``n`` (n_phys,): live rows right-aligned,
        every other row a padding row (``n = 0``: no real column)."""
        pad = self.mtp_token_id or 0
        ids = [[pad] * W for _ in range(n_phys)]
        lens, n = [0] * n_phys, [0] * n_phys
        for r in live:
            s = seqs[r.phys]
            ids[r.phys][W - len(s):] = s
            lens[r.phys], n[r.phys] = r.cache_len, len(s)
        return (torch.tensor(ids, dtype=torch.long), torch.tensor(lens, dtype=torch.long),
                torch.tensor(n, dtype=torch.long))

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

    def _result(self, r: _Row, t0: float, t_first: float, batch: int) -> GenerationResult:
        return r.tally.result(t0=t0, t_first=t_first, prompt_tokens=r.prompt_len,
                              extras={"batch_size": batch, "cache_len": r.cache_len, "engine": self.mode})

    # ---- shapes and buffers --------------------------------------------------------------
    def _batch_bucket(self, n: int) -> int:
        return min(_pow2(n), self._cache.rows) if self.graphs else n

    def _kv_bucket(self, kv: int) -> int:
        """Graphs: ``kv`` rounded up to a multiple of ``kv_bucket``, or of an eighth of the power
        of two below it when that is larger (so a pass attends at most 1/8 more slots than it needs
        and a 32k-token budget needs about 40 buckets, not 128), at most the cache's slots."""
        if not self.graphs:
            return kv
        step = max(self.kv_bucket, (1 << (max(kv, 1).bit_length() - 1)) // 8)
        return min(_round_up(kv, step), self._cache.slots)

    def _reserve(self, rows: int, slots: int) -> None:
        """Make the buffers hold ``rows`` rows of ``slots`` slots: rows grow to a power of two
        (at most ``max_batch_size``), slots to a multiple of ``SLOT_ROUND`` (at most
        ``max_seq_len``). Growing reallocates and drops every captured graph."""
        c = self._cache
        if c is not None and c.rows >= rows and c.slots >= slots:
            return
        rows = max(min(_pow2(rows), self.max_batch_size), c.rows if c else 0)
        slots = max(min(_round_up(slots, SLOT_ROUND), self.max_seq_len), c.slots if c else 0)
        self._graphs.clear()  # they read the old buffers
        if self.backend is not None:
            self.backend.release()
        self._cache = None  # free the old buffers first
        self._cache = RowCache.for_model(self.model, rows, slots)

    def _compact(self, active: list[_Row], n_phys: int) -> int:
        """Move the live rows to the first buffer rows when the batch fits a smaller shape."""
        target = self._batch_bucket(len(active)) if active else 0
        if not active or target >= n_phys:
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
    def _run(self, inputs: tuple[torch.Tensor, ...], kv: int, K: int, bda: int, eager: bool,
             ge: bool = False) -> torch.Tensor:
        """One pass over the host ``inputs`` (ids, lens, n): eager, or the captured graph of its
        shape (captured on first use). ``bda``: the trailing mask columns that attend to each
        other both ways (0 = causal); ``ge``: the authors' threshold compare (part of the key)."""
        self.counters["passes"] += 1
        ids, lens, n = (x.to(self.device) for x in inputs) if eager else inputs
        if eager:
            self.counters["eager_passes"] += 1
            return self._pass(ids, lens, n, kv=kv, K=K, bda=bda, ge=ge)
        key = (ids.shape[0], ids.shape[1], kv, K, bda, ge)
        g = self._graphs.get(key)
        if g is None:
            g = self._graphs[key] = self._capture(key, tuple(x.to(self.device) for x in inputs))
        else:
            self._load(g, inputs)
        self.counters["graph_replays"] += 1
        return self.backend.replay(g)

    @staticmethod
    def _load(g: Captured, inputs: tuple[torch.Tensor, ...]) -> None:
        """Copy this pass's host inputs into the graph's static input buffers."""
        for static, new in zip(g.inputs, inputs, strict=True):
            static.copy_(new, non_blocking=True)

    def _capture(self, key: tuple, inputs: tuple[torch.Tensor, ...]) -> Captured:
        B, W, kv, K, bda, ge = key
        t = time.perf_counter()
        try:
            g = self.backend.capture(lambda ids, lens, n: self._pass(ids, lens, n, kv=kv, K=K, bda=bda, ge=ge),
                                     inputs)
        except Exception as e:
            raise MtpsdError(f"CUDA graph capture failed for a pass of {B} rows x {W} columns over {kv} slots "
                             f"({type(e).__name__}: {e}); {SWITCH}") from e
        self.counters["graph_captures"] += 1
        self.counters["capture_s"] += time.perf_counter() - t
        return g

    def _pass(self, ids: torch.Tensor, lens: torch.Tensor, n: torch.Tensor, *, kv: int, K: int,
              bda: int, ge: bool = False) -> torch.Tensor:
        """Forward ``ids`` (B, W); return the read-out of the last ``K`` columns, ``(2, B, K)``:
        argmax ids and ConfAdapt flags (``max softmax > tau`` in float32; ``ge``: ``>= tau`` with
        softmax and threshold in the logits' dtype, ``common.confident``). Shapes depend only on
        (B, W, kv, K), and nothing here reads a device value on the host: capturable."""
        B, W = ids.shape
        cache = self._cache
        j = torch.arange(W, device=ids.device) - (W - n)[:, None]  # (B, W): index among the row's real columns
        real = j >= 0
        slot = lens[:, None] + j
        cache.write_index = torch.where(real, slot, cache.dump_slot)[:, None, :, None]  # (B, 1, W, 1)
        cache.kv_len = kv
        pos = torch.where(real, slot, 0)  # padding: position 0, attends slot 0 only
        slots = torch.arange(kv, device=ids.device)
        allowed = slots <= pos[..., None]  # (B, W, kv)
        if bda:
            end = lens + n  # (B,) one past the row's last slot of this pass
            mask_keys = (slots >= (end - bda)[:, None]) & (slots < end[:, None])  # (B, kv): the row's masks
            mask_queries = torch.arange(W, device=ids.device) >= W - bda  # (W,)
            allowed = allowed | (mask_queries[None, :, None] & mask_keys[:, None, :])
        mask = packed_mask(allowed, self._n_rep, self._zero, self._neg_inf)  # (B, 1, n_rep * W, kv)
        cfg = self.model.config
        before = cfg._attn_implementation
        cfg._attn_implementation = ENGINE_ATTENTION  # for this forward only
        try:
            with sdpa_kernel(SDPA_BACKENDS):
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                                    use_cache=True, logits_to_keep=K).logits  # (B, K, V)
        finally:
            cfg._attn_implementation = before
        logits = logits + self._bias  # -inf at banned ids
        ok = confident(logits, self._tau_model if ge else self._tau, as_convention("authors" if ge else "project"))
        return torch.stack([logits.argmax(-1), ok.long()])  # (2, B, K)


def engine_for(model, mtp_token_id: int | None, *, batch: int, seq_len: int, holder=None,
               attention: str | None = None, graphs: bool | None = None,
               mask_budget: int | None = None) -> DecodeEngine:
    """The engine kept on ``holder`` (default: the model) for ``batch`` rows of ``seq_len`` slots.

    Created on first use and replaced by a larger one when a request needs more rows or
    slots (rows grow to powers of two, slots to multiples of 1024, so this is rare), or when
    it was made for another mask (``attention``, None = ``config.mtp_attention``) or graph
    mode (``graphs``, None = by device). ``mask_budget`` is set on the engine for this call.
    """
    holder = model if holder is None else holder
    eng = holder.__dict__.get("_mtpsd_engine")
    mode = mtp_attention(model, attention, check_implementation=False)
    graphs = torch.device(model.device).type == "cuda" if graphs is None else graphs
    if (eng is None or eng.model is not model or eng.mtp_token_id != mtp_token_id or eng.max_batch_size < batch
            or eng.max_seq_len < seq_len or eng.device != torch.device(model.device) or eng.attention != mode
            or eng.graphs != graphs):
        old = (eng.max_batch_size, eng.max_seq_len) if eng is not None and eng.model is model else (1, 0)
        eng = None  # free the old buffers before allocating the new ones
        holder.__dict__.pop("_mtpsd_engine", None)
        eng = DecodeEngine(model, mtp_token_id=mtp_token_id, max_batch_size=max(_pow2(batch), old[0]),
                           max_seq_len=max(_round_up(seq_len, 1024), old[1]), k_max=1 << 30, attention=mode,
                           graphs=graphs)
        holder.__dict__["_mtpsd_engine"] = eng
    eng.mask_budget = mask_budget
    return eng
