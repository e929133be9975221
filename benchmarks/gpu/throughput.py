"""Decoding throughput, methods interleaved in one process on one random-weight model.

Methods (the same prompts, the same number of new tokens, EOS ignored):
- ``hf-eager``: HF ``generate`` greedy with its default dynamic cache, not compiled;
- ``hf-static-compiled``: HF ``generate`` greedy with ``cache_implementation="static"``; on CUDA
  transformers then compiles the decoding step itself (torch.compile, mode
  "reduce-overhead"): the fair baseline. On CPU it runs uncompiled (``compiled: false``);
- ``ours-k1``, ``ours-static-k2..4``: ``DecodeEngine`` Static-k (k=1 is plain greedy);
- ``ours-confadapt-replayed``: ``DecodeEngine`` ConfAdapt (k_max, tau) whose acceptance is
  REPLAYED through ``accept_fn`` (``replay.Replayer``): random weights accept nothing, so
  the chunk sizes come from a stated distribution or a recorded decode JSONL. It runs with
  the engine's mask budget (``mask_budget``: the measured ridge by default); when a budget
  is set, ``ours-confadapt-replayed-nobudget`` runs the same with all ``k_max - 1`` masks
  per row, to show what the budget buys under concurrency.

Per batch size: one warm-up call per method at full length (CUDA-graph capture,
compilation; HF eager: ``warmup_tokens``), then ``reps`` rounds in which every method
runs once in turn (``engine_captures_while_timed`` counts graphs the engine still had to
capture inside the timed rounds: it should be 0). Tokens/s = tokens / wall time
(prefill included, device synchronised), pooled over the rounds; ratios against our k=1,
HF eager and HF static compiled at the same batch size. The JSON is rewritten after every
batch size, so a section stopped by its deadline keeps what it measured.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from benchmarks.gpu.common import (CONFADAPT, CONFADAPT_FULL, HF_EAGER, HF_STATIC, OURS_K1, Deadline,
                                   random_prompts, timed)


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "hf" | "ours"
    strategy: str | None = None
    k: int = 1
    tau: float = 0.0
    cache: str | None = None  # HF cache_implementation
    budget: bool = True  # ours: run with the engine's mask budget (False: all k-1 masks)


def methods(static_ks=(2, 3, 4), k_max: int = 16, tau: float = 0.9, hf_static: bool = True,
            budget_variant: bool = False) -> list[Method]:
    out = [Method(OURS_K1, "ours", "static", 1)]
    out += [Method(f"ours-static-k{k}", "ours", "static", k) for k in static_ks]
    out.append(Method(CONFADAPT, "ours", "confadapt", k_max, tau))
    if budget_variant:
        out.append(Method(CONFADAPT_FULL, "ours", "confadapt", k_max, tau, budget=False))
    out.append(Method(HF_EAGER, "hf"))
    if hf_static:  # last: its warm-up compiles, and the time guard may skip it
        out.append(Method(HF_STATIC, "hf", cache="static"))
    return out


def make_engine(model, *, max_batch_size: int, max_seq_len: int, k_max: int, mask_budget: int | None):
    from mtpsd.decoding.engine import DecodeEngine

    return DecodeEngine(model, mtp_token_id=int(model.config.mtp_token_id), max_batch_size=max_batch_size,
                        max_seq_len=max_seq_len, k_max=k_max, graphs=None, mask_budget=mask_budget)


def run_call(model, engine, m: Method, prompts: list[list[int]], n_new: int, replayer,
             mask_budget: int | None = None) -> dict:
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
    engine.mask_budget = mask_budget if m.budget else None  # read by the engine at every pass
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


def _captures(engine) -> int | None:
    counters = getattr(engine, "counters", None)
    return counters.get("graph_captures") if isinstance(counters, dict) else None


def run_cell(cell: dict, model, engine, ms: list[Method], prompts, *, new_tokens: int, reps: int, warmup_tokens: int,
             replayer, mask_budget, compile_reserve_s: float, deadline: Deadline, log) -> None:
    """Warm up, then ``reps`` interleaved rounds of ``ms`` on ``prompts``; stats into ``cell["methods"]``."""
    on_cuda = model.device.type == "cuda"
    live, calls = [], {}
    for m in ms:  # warm-up: graph capture and compilation stay out of the timed rounds
        if m.kind == "ours" and engine is None:
            cell["errors"][m.name] = "no engine"
            continue
        if deadline.passed(compile_reserve_s if m.cache == "static" and on_cuda else 0.0):
            cell["skipped"].append(m.name)
            continue
        # the engine's and HF's static shapes depend on the length: warm up at full length
        n_warm = min(warmup_tokens, new_tokens) if m.name == HF_EAGER else new_tokens
        try:
            w = run_call(model, engine, m, prompts, n_warm, replayer, mask_budget)
        except Exception as e:  # noqa: BLE001 - one broken method must not stop the others
            cell["errors"][m.name] = f"{type(e).__name__}: {e}"[:500]
            log(f"b={len(prompts)} {m.name}: {cell['errors'][m.name]}")
            continue
        calls[m.name] = {"warmup_s": w["wall_s"], "calls": []}
        live.append(m)
    before = _captures(engine)
    for _ in range(reps):
        for m in list(live):
            if deadline.passed():
                break
            try:
                calls[m.name]["calls"].append(run_call(model, engine, m, prompts, new_tokens, replayer, mask_budget))
            except Exception as e:  # noqa: BLE001
                cell["errors"][m.name] = f"{type(e).__name__}: {e}"[:500]
                live.remove(m)
    if before is not None and any(m.kind == "ours" for m in live):
        cell["engine_captures_while_timed"] = cell.get("engine_captures_while_timed", 0) + _captures(engine) - before
    for name, v in calls.items():
        if v["calls"]:
            cell["methods"][name] = {"warmup_s": v["warmup_s"], **_stats(v["calls"])}
        else:
            cell["skipped"].append(name)


def measure(model, *, batches=(1, 16, 64), prompt_len: int = 128, new_tokens: int = 128, reps: int = 2,
            warmup_tokens: int = 32, static_ks=(2, 3, 4), k_max: int = 16, tau: float = 0.9,
            mask_budget: int | None = None, replayer=None, hf_static: bool = True,
            compile_reserve_s: float = 60.0, deadline: Deadline | None = None, on_batch=None, log=print) -> dict:
    """Run every method at every batch size (see the module docstring); returns the JSON block.

    Phase 1: every method but HF's compiled static cache, interleaved, batch size by batch
    size. Phase 2 (what time is left; compilation takes long and must not crowd out the
    targets): HF static compiled per batch size, interleaved with a second run of our k=1
    (``ours_k1_alongside_hf_static``: tokens/s, a check on drift between the phases)."""
    deadline = deadline or Deadline(float("inf"))
    device = model.device
    vocab = int(model.config.vocab_size)
    ms = methods(static_ks, k_max, tau, hf_static, budget_variant=mask_budget is not None)
    out: dict = {"prompt_len": prompt_len, "new_tokens": new_tokens, "reps": reps, "k_max": k_max, "tau": tau,
                 "mask_budget": mask_budget, "hf_static_compiled": hf_static and device.type == "cuda",
                 "methods": [m.name for m in ms], "batches": {}, "errors": []}
    try:
        engine = make_engine(model, max_batch_size=max(batches), max_seq_len=prompt_len + new_tokens + 2 * k_max + 8,
                             k_max=k_max, mask_budget=None)
    except Exception as e:  # noqa: BLE001 - the HF baselines still run; the JSON says why ours did not
        engine = None
        out["errors"].append(f"DecodeEngine unavailable: {type(e).__name__}: {e}"[:500])
        log(out["errors"][-1])
    kw = dict(new_tokens=new_tokens, reps=reps, warmup_tokens=warmup_tokens, replayer=replayer,
              mask_budget=mask_budget, compile_reserve_s=compile_reserve_s, deadline=deadline, log=log)
    prompts = {b: random_prompts(b, prompt_len, vocab, seed=1000 + b) for b in batches}
    first = [m for m in ms if m.name != HF_STATIC]
    second = [m for m in ms if m.name in (OURS_K1, HF_STATIC)] if hf_static else []
    for phase, group in ((1, first), (2, second)):
        for b in batches if group else ():
            cell = out["batches"].setdefault(str(b), {"methods": {}, "skipped": [], "errors": {}})
            if phase == 1:
                run_cell(cell, model, engine, group, prompts[b], **kw)
            else:
                again = {"methods": {}, "skipped": [], "errors": {}}
                run_cell(again, model, engine, group, prompts[b], **kw)
                if HF_STATIC in again["methods"]:
                    cell["methods"][HF_STATIC] = again["methods"][HF_STATIC]
                    cell["ours_k1_alongside_hf_static"] = again["methods"].get(OURS_K1, {}).get("tokens_per_s")
                cell["skipped"] += [n for n in again["skipped"] if n == HF_STATIC]
                cell["errors"].update({n: e for n, e in again["errors"].items() if n == HF_STATIC})
            add_ratios(cell)
            for name, v in cell["methods"].items():
                if phase == 1 or name == HF_STATIC:
                    log(f"b={b:<3d} {name:<34}{v['tokens_per_s']:>10.1f} tok/s  eff_k {v['eff_k']:.2f}  "
                        f"x{v.get('vs_ours_k1') or float('nan'):.2f} vs k1  "
                        f"x{v.get('vs_hf_eager') or float('nan'):.2f} vs HF eager")
            if on_batch is not None:
                on_batch(out)
    if replayer is not None:
        out["replay"] = replayer.description
    if engine is not None:
        out["engine"] = {k: getattr(engine, k) for k in ("max_batch_size", "max_seq_len", "k_max", "mode",
                                                         "kv_bucket", "prefill_chunk")
                         if isinstance(getattr(engine, k, None), (int, float, bool, str))}
        out["engine"]["counters"] = dict(engine.counters)
        out["engine"]["graph_pool_bytes"] = getattr(engine.backend, "pool_bytes", None)
    return out
