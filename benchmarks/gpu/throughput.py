"""Decoding throughput, methods interleaved in one process on one random-weight model.

Methods (the same prompts, the same number of new tokens, EOS ignored):
- ``hf-eager``: HF ``generate`` greedy with its default dynamic cache, not compiled;
- ``hf-static-compiled``: HF ``generate`` greedy with ``cache_implementation="static"``; on CUDA
  transformers then compiles the decoding step itself (torch.compile, mode
  "reduce-overhead"): the fair baseline. On CPU it runs uncompiled (``compiled: false``);
- ``ours-k1``, ``ours-static-k2..4``: ``DecodeEngine`` Static-k (k=1 is plain greedy);
- ``ours-confadapt-replayed``: ``DecodeEngine`` ConfAdapt (k_max, tau) whose acceptance is
  REPLAYED through ``accept_fn`` (``replay.Replayer``): random weights accept nothing, so
  the chunk sizes come from a stated distribution or a recorded decode JSONL.

Per batch size: one warm-up call per method (CUDA-graph capture, compilation), then
``reps`` rounds in which every method runs once in turn. Tokens/s = tokens / wall time
(prefill included, device synchronised), pooled over the rounds; ratios against our k=1,
HF eager and HF static compiled at the same batch size. The JSON is rewritten after every
batch size, so a section stopped by its deadline keeps what it measured.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from benchmarks.gpu.common import Deadline, random_prompts, timed

OURS_K1 = "ours-k1"
HF_EAGER = "hf-eager"
HF_STATIC = "hf-static-compiled"
CONFADAPT = "ours-confadapt-replayed"


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "hf" | "ours"
    strategy: str | None = None
    k: int = 1
    tau: float = 0.0
    cache: str | None = None  # HF cache_implementation


def methods(static_ks=(2, 3, 4), k_max: int = 16, tau: float = 0.9, hf_static: bool = True) -> list[Method]:
    out = [Method(OURS_K1, "ours", "static", 1)]
    out += [Method(f"ours-static-k{k}", "ours", "static", k) for k in static_ks]
    out.append(Method(CONFADAPT, "ours", "confadapt", k_max, tau))
    out.append(Method(HF_EAGER, "hf"))
    if hf_static:  # last: its warm-up compiles, and the time guard may skip it
        out.append(Method(HF_STATIC, "hf", cache="static"))
    return out


def make_engine(model, *, max_batch_size: int, max_seq_len: int, k_max: int, mask_budget: int | None):
    from mtpsd.decoding.engine import DecodeEngine

    return DecodeEngine(model, mtp_token_id=int(model.config.mtp_token_id), max_batch_size=max_batch_size,
                        max_seq_len=max_seq_len, k_max=k_max, cuda_graphs=None, mask_budget=mask_budget)


def run_call(model, engine, m: Method, prompts: list[list[int]], n_new: int, replayer) -> dict:
    """One generation of ``n_new`` tokens for every prompt; returns tokens, passes, wall time."""
    device = model.device
    if m.kind == "hf":
        ids = torch.tensor(prompts, device=device)
        kw = {"cache_implementation": m.cache} if m.cache else {}
        out, wall = timed(lambda: model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                                 max_new_tokens=n_new, **kw), device)
        new = out.shape[1] - ids.shape[1]
        if new != n_new:
            raise RuntimeError(f"{m.name}: generated {new} tokens, asked for {n_new}")
        return {"tokens": new * len(prompts), "row_passes": new * len(prompts), "batch_passes": new, "wall_s": wall}
    if engine is None:
        raise RuntimeError("no engine")
    kw = {"accept_fn": replayer} if m.strategy == "confadapt" else {}
    res, wall = timed(lambda: engine.generate(prompts, strategy=m.strategy, k=m.k, tau=m.tau,
                                              max_new_tokens=n_new, stop_token_ids=(), **kw), device)
    lens = [len(r.tokens) for r in res]
    if lens != [n_new] * len(prompts):
        raise RuntimeError(f"{m.name}: rows generated {sorted(set(lens))} tokens, asked for {n_new}")
    return {"tokens": sum(lens), "row_passes": sum(r.forward_passes for r in res),
            "batch_passes": max(r.forward_passes for r in res), "wall_s": wall}


def _stats(calls: list[dict]) -> dict:
    tokens = sum(c["tokens"] for c in calls)
    wall = sum(c["wall_s"] for c in calls)
    per = [c["tokens"] / c["wall_s"] for c in calls]
    return {"reps": len(calls), "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
            "tokens_per_s_reps": per, "spread": (max(per) - min(per)) / statistics.median(per),
            "eff_k": tokens / sum(c["row_passes"] for c in calls),
            "batch_passes": [c["batch_passes"] for c in calls]}


def add_ratios(cell: dict) -> None:
    """Each method's tokens/s over our k=1's, HF eager's and HF static compiled's (same batch size)."""
    ms = cell["methods"]
    for ref, key in ((OURS_K1, "vs_ours_k1"), (HF_EAGER, "vs_hf_eager"), (HF_STATIC, "vs_hf_static")):
        base = ms.get(ref, {}).get("tokens_per_s")
        for v in ms.values():
            if "tokens_per_s" in v:
                v[key] = v["tokens_per_s"] / base if base else None


def measure(model, *, batches=(1, 16, 64), prompt_len: int = 128, new_tokens: int = 128, reps: int = 2,
            warmup_tokens: int = 32, static_ks=(2, 3, 4), k_max: int = 16, tau: float = 0.9,
            mask_budget: int | None = None, replayer=None, hf_static: bool = True,
            compile_reserve_s: float = 60.0, deadline: Deadline | None = None, on_batch=None, log=print) -> dict:
    """Run every method at every batch size (see the module docstring); returns the JSON block."""
    deadline = deadline or Deadline(float("inf"))
    device = model.device
    vocab = int(model.config.vocab_size)
    ms = methods(static_ks, k_max, tau, hf_static)
    out: dict = {"prompt_len": prompt_len, "new_tokens": new_tokens, "reps": reps, "k_max": k_max, "tau": tau,
                 "mask_budget": mask_budget, "hf_static_compiled": hf_static and device.type == "cuda",
                 "methods": [m.name for m in ms], "batches": {}, "errors": []}
    try:
        engine = make_engine(model, max_batch_size=max(batches), max_seq_len=prompt_len + new_tokens + 2 * k_max + 8,
                             k_max=k_max, mask_budget=mask_budget)
    except Exception as e:  # noqa: BLE001 - the HF baselines still run; the JSON says why ours did not
        engine = None
        out["errors"].append(f"DecodeEngine unavailable: {type(e).__name__}: {e}"[:500])
        log(out["errors"][-1])
    for b in batches:
        cell: dict = {"methods": {}, "skipped": [], "errors": {}}
        out["batches"][str(b)] = cell
        if deadline.passed():
            cell["skipped"] = [m.name for m in ms]
            continue
        prompts = random_prompts(b, prompt_len, vocab, seed=1000 + b)
        live = []
        for m in ms:  # warm-up: graph capture / compilation stay out of the timed rounds
            if m.kind == "ours" and engine is None:
                cell["errors"][m.name] = "no engine"
                continue
            reserve = compile_reserve_s if m.cache == "static" and device.type == "cuda" else 0.0
            if deadline.passed(reserve):
                cell["skipped"].append(m.name)
                continue
            n_warm = new_tokens if m.cache == "static" else min(warmup_tokens, new_tokens)  # same static-cache shape
            try:
                w = run_call(model, engine, m, prompts, n_warm, replayer)
                cell["methods"][m.name] = {"warmup_s": w["wall_s"], "calls": []}
                live.append(m)
            except Exception as e:  # noqa: BLE001 - one broken method must not stop the others
                cell["errors"][m.name] = f"{type(e).__name__}: {e}"[:500]
                log(f"b={b} {m.name}: {cell['errors'][m.name]}")
        for _ in range(reps):
            for m in list(live):
                if deadline.passed():
                    break
                try:
                    cell["methods"][m.name]["calls"].append(run_call(model, engine, m, prompts, new_tokens, replayer))
                except Exception as e:  # noqa: BLE001
                    cell["errors"][m.name] = f"{type(e).__name__}: {e}"[:500]
                    live.remove(m)
        for name, v in list(cell["methods"].items()):
            if v["calls"]:
                v.update(_stats(v.pop("calls")))
            else:
                del cell["methods"][name]
                cell["skipped"].append(name)
        add_ratios(cell)
        for name, v in cell["methods"].items():
            log(f"b={b:<3d} {name:<26}{v['tokens_per_s']:>10.1f} tok/s  eff_k {v['eff_k']:.2f}"
                f"  x{v.get('vs_ours_k1') or float('nan'):.2f} vs k1  x{v.get('vs_hf_eager') or float('nan'):.2f} vs HF eager")
        if on_batch is not None:
            on_batch(out)
    if replayer is not None:
        out["replay"] = replayer.description
    if engine is not None:
        out["engine"] = {k: getattr(engine, k) for k in ("mask_budget", "max_batch_size", "max_seq_len", "k_max",
                                                         "cuda_graphs") if isinstance(getattr(engine, k, None),
                                                                                      (int, float, bool, str))}
    return out
