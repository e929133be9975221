"""The cost of one decoding pass against the tokens it carries (batch x width).

Each point is one forward of the model over ``batch`` rows of ``width`` new tokens on
top of a KV cache that already holds ``kv_len`` random keys/values per row (an HF
``StaticCache``; its slots ``kv_len..kv_len+width-1`` are overwritten by every pass),
logits for every position included. On CUDA the pass is captured into a CUDA graph
and its replays are timed with CUDA events (median of several samples), so the figure is
the GPU's cost, not Python's launch overhead; where capture fails the eager pass is timed
instead and ``mode`` says so. On CPU the eager pass is timed with a host clock.

Ridge: the smallest tokens per pass whose pass costs more than ``RIDGE_FACTOR`` times a
1-token pass (batch 1, width 1). Below it a pass is memory-bound (more tokens are nearly
free); the engine's mask budget (target tokens per pass) is set from it.

On CUDA it also measures the device-to-device copy bandwidth; over the weights' bytes that
gives the batch-1 ceiling of tokens/s (each weight read once per token).
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.gpu.common import Deadline, sync

RIDGE_FACTOR = 1.25
B1_WIDTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def points(batches, max_tokens: int) -> list[tuple[int, int]]:
    """(batch, width) pairs: batch 1 at widths ``B1_WIDTHS``, other batches at powers of two,
    all with batch x width <= ``max_tokens``."""
    out = []
    for b in sorted(set(batches) | {1}):
        widths = B1_WIDTHS if b == 1 else [2 ** i for i in range(12)]
        out += [(b, w) for w in widths if b * w <= max_tokens]
    return out


def _new_cache(model, batch: int, kv_len: int, max_len: int, vocab: int, device):
    """A StaticCache of ``max_len`` slots for ``batch`` rows, every slot random (not zeros),
    and the write position to rewind to (``kv_len``) kept as a device tensor."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=max_len)
    ids = torch.randint(3, vocab - 1, (batch, 1), device=device)
    with torch.no_grad():  # allocates the layers' buffers (lazy initialisation)
        model(input_ids=ids, past_key_values=cache, use_cache=True)
    g = torch.Generator(device=device).manual_seed(1)
    for layer in cache.layers:
        for t in (layer.keys, layer.values):
            t.normal_(generator=g)
        if not isinstance(getattr(layer, "cumulative_length", None), torch.Tensor):
            raise RuntimeError("this transformers' StaticLayer has no cumulative_length tensor to rewind")
    lens = [layer.cumulative_length for layer in cache.layers]
    srcs = [torch.full_like(t, kv_len) for t in lens]
    return cache, (lens, srcs)


def rewind(state) -> None:
    """Set every layer's write position back to ``kv_len`` (transformers 5.17-5.23 StaticLayer keeps
    it in a ``cumulative_length`` tensor and appends there), so each pass overwrites the same
    slots: one fused copy kernel, next to nothing inside a captured graph."""
    lens, srcs = state
    torch._foreach_copy_(lens, srcs)


def _time_cuda_graph(fwd, samples: int, reps: int) -> float:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fwd()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fwd()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    del graph, out
    return statistics.median(times)


def _time_eager(fwd, device, samples: int, reps: int) -> float:
    fwd()
    times = []
    for _ in range(samples):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fwd()
        sync(device)
        times.append((time.perf_counter() - t0) * 1000 / reps)
    return statistics.median(times)


def copy_bandwidth_gb_s(device, *, gib: float = 2.0, reps: int = 10) -> float:
    """Device-to-device copy of a ``gib`` GiB buffer of random bytes, (read + written bytes) / time,
    median of 5 samples of ``reps`` copies (CUDA events): the memory ceiling a 1-token pass faces."""
    n = int(gib * 2 ** 30)
    src = torch.randint(0, 256, (n,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000 / reps)
    del src, dst
    return 2 * n / statistics.median(times) / 1e9


def measure(model, *, batches=(1, 16, 64), max_tokens: int = 512, kv_len: int = 1024, samples: int = 5,
            reps: int = 10, graphs: bool | None = None, deadline: Deadline | None = None, log=print) -> dict:
    """Cost of one pass per (batch, width); see the module docstring. Returns the JSON block."""
    device = model.device
    graphs = device.type == "cuda" if graphs is None else graphs
    vocab = int(model.config.vocab_size)
    pts = points(batches, max_tokens)
    rows, errors, skipped = [], [], []
    modes = set()
    by_batch: dict[int, list[int]] = {}
    for b, w in pts:
        by_batch.setdefault(b, []).append(w)
    for b, widths in by_batch.items():
        if deadline is not None and deadline.passed():
            skipped += [{"batch": b, "width": w, "reason": "time guard"} for w in widths]
            continue
        cache, state = _new_cache(model, b, kv_len, kv_len + max(widths), vocab, device)
        for w in widths:
            if deadline is not None and deadline.passed():
                skipped.append({"batch": b, "width": w, "reason": "time guard"})
                continue
            ids = torch.randint(3, vocab - 1, (b, w), device=device)
            pos = torch.arange(kv_len, kv_len + w, device=device).expand(b, w)

            def fwd():
                rewind(state)
                return model(input_ids=ids, past_key_values=cache, position_ids=pos, use_cache=True).logits

            mode = "cuda_graph" if graphs else "eager"
            with torch.no_grad():
                try:
                    ms = _time_cuda_graph(fwd, samples, reps) if graphs else _time_eager(fwd, device, samples, reps)
                except Exception as e:  # noqa: BLE001 - fall back to the eager pass, say so
                    errors.append({"batch": b, "width": w, "error": f"{type(e).__name__}: {e}"[:500]})
                    mode = "eager (graph capture failed)"
                    ms = _time_eager(fwd, device, samples, reps)
            modes.add(mode)
            rows.append({"batch": b, "width": w, "tokens": b * w, "ms": ms, "tokens_per_s": b * w / ms * 1000,
                         "mode": mode})
            log(f"roofline b={b:<3d} w={w:<4d} tokens={b * w:<4d} {ms:8.3f} ms  ({mode})")
        del cache, state
        if device.type == "cuda":
            torch.cuda.empty_cache()
    extra = {}
    if device.type == "cuda":
        try:
            bw = copy_bandwidth_gb_s(device)
            weight_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
            extra = {"copy_bandwidth_gb_s": bw, "weights_gb": weight_gb,
                     "batch1_ceiling_tokens_per_s": bw / weight_gb}  # every weight read once per token
            log(f"device copy {bw:.0f} GB/s; weights {weight_gb:.1f} GB: batch-1 ceiling {bw / weight_gb:.0f} tok/s")
        except Exception as e:  # noqa: BLE001
            errors.append({"error": f"copy bandwidth: {type(e).__name__}: {e}"[:500]})
    return {"kv_len": kv_len, "max_tokens": max_tokens, "logits": "all positions", "ridge_factor": RIDGE_FACTOR,
            "modes": sorted(modes), "points": rows, **ridges(rows), **extra, "skipped": skipped, "errors": errors}


def ridges(rows: list[dict]) -> dict:
    """``ridge_tokens``: smallest tokens/pass (batch 1 series, else any) costing > RIDGE_FACTOR x the
    1-token pass; ``ridge_by_batch``: the same per batch size against its own width-1 pass."""
    cost = {(r["batch"], r["width"]): r["ms"] for r in rows}
    base = cost.get((1, 1))
    out: dict = {"one_token_ms": base, "ridge_tokens": None, "ridge_by_batch": {}}
    if base is None:
        return out
    b1 = sorted((w, ms) for (b, w), ms in cost.items() if b == 1)
    out["ridge_tokens"] = next((w for w, ms in b1 if ms > RIDGE_FACTOR * base), None)
    for b in sorted({b for b, _ in cost}):
        series = sorted((w, ms) for (bb, w), ms in cost.items() if bb == b)
        if not series or series[0][0] != 1:
            continue
        first = next((b * w for w, ms in series if ms > RIDGE_FACTOR * series[0][1]), None)
        vs_one = next((b * w for w, ms in series if ms > RIDGE_FACTOR * base), None)
        out["ridge_by_batch"][str(b)] = {"width1_ms": series[0][1], "ridge_tokens_vs_own_width1": first,
                                         "ridge_tokens_vs_one_token": vs_one}
    return out
