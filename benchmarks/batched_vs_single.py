"""Batched vs batch-1 decoding with the engine: speed and agreement, per dtype.

    python benchmarks/batched_vs_single.py --checkpoint results/runs/tiny/checkpoint \
        --prompts results/data/test.jsonl --n 32 --dtype float32 bfloat16 --out results/bench/batched_tiny.json

The accuracy sweeps decode in batches (``eval.batch_size``) and the speed figures at batch 1
(``decode`` rule). In float32 the two give the same tokens (``tests/test_engine.py``); in
bfloat16 a pass over B rows rounds differently from a pass over one, and near-ties flip.
This measures both: tokens/s of one batched call over ``n`` prompts vs ``n`` batch-1 calls
(interleaved after a warm-up), and how many generations are identical, with the first
differing token of the others.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mtpsd import numerics

numerics.apply()  # before torch is imported (pinned CPU numerics; MTPSD_NUMERICS=native to skip)
import torch  # noqa: E402


def _run(engine, prompts, batched: bool, **kw):
    t0 = time.perf_counter()
    if batched:
        res = engine.generate(prompts, **kw)
    else:
        res = [engine.generate([p], **kw)[0] for p in prompts]
    return res, time.perf_counter() - t0


def _first_diff(a: list[int], b: list[int]) -> int | None:
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def measure(checkpoint, prompts_path, *, n, dtype, settings, max_new_tokens, chat_template, rounds):
    from mtpsd.checkpoint import load_checkpoint
    from mtpsd.data.prompts import encode_prompt
    from mtpsd.decoding.engine import DecodeEngine
    from mtpsd.io import read_jsonl
    from mtpsd.vocab import end_token_ids

    model, tok = load_checkpoint(checkpoint, dtype=dtype, device="cpu")
    rows = read_jsonl(prompts_path)[:n]
    prompts = [encode_prompt(tok, r["question"], chat_template=chat_template) for r in rows]
    mtp = int(model.config.mtp_token_id)
    k_max = max(k for _, k, _ in settings)
    engine = DecodeEngine(model, mtp_token_id=mtp, max_batch_size=len(prompts), k_max=k_max,
                          max_seq_len=max(map(len, prompts)) + max_new_tokens + 2 * k_max)
    out = []
    for strategy, k, tau in settings:
        kw = dict(strategy=strategy, k=k, tau=tau, max_new_tokens=max_new_tokens,
                  stop_token_ids=end_token_ids(model, tok), tokenizer=tok)
        _run(engine, prompts[:2], True, **kw)  # warm-up
        times = {True: 0.0, False: 0.0}
        for _ in range(rounds):
            for batched in (False, True):
                res, dt = _run(engine, prompts, batched, **kw)
                times[batched] += dt
                if batched:
                    batch_res = res
                else:
                    single_res = res
        tokens_b = sum(len(r.tokens) for r in batch_res)
        tokens_s = sum(len(r.tokens) for r in single_res)
        diffs = [_first_diff(a.tokens, b.tokens) for a, b in zip(single_res, batch_res)]
        out.append({
            "dtype": dtype, "strategy": strategy, "k": k, "tau": tau if strategy == "confadapt" else None,
            "n": len(prompts), "tokens_per_s_batch1": tokens_s * rounds / times[False],
            "tokens_per_s_batched": tokens_b * rounds / times[True],
            "speedup": (tokens_b / times[True]) / (tokens_s / times[False]),
            "identical_generations": sum(d is None for d in diffs),
            "first_difference_at": [d for d in diffs if d is not None],
        })
        r = out[-1]
        print(f"{dtype:9s} {strategy:9s} k={k:<2d} batch-1 {r['tokens_per_s_batch1']:8.1f} tok/s  "
              f"batched {r['tokens_per_s_batched']:8.1f} tok/s  x{r['speedup']:.2f}  "
              f"identical {r['identical_generations']}/{r['n']}  first diffs {r['first_difference_at'][:8]}",
              flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="MTP checkpoint directory")
    p.add_argument("--prompts", required=True, help="JSONL with a 'question' field")
    p.add_argument("--n", type=int, default=32, help="prompts (= the batch size)")
    p.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--k-max", type=int, default=4, help="ConfAdapt k_max")
    p.add_argument("--tau", type=float, default=0.9)
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--chat-template", action="store_true")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="JSON to write")
    args = p.parse_args(argv)
    from mtpsd.io import atomic_write_json, provenance

    torch.set_num_threads(args.threads)
    settings = [("static", 1, 0.0), ("confadapt", args.k_max, args.tau)]
    rows = []
    for dtype in args.dtype:
        rows += measure(args.checkpoint, args.prompts, n=args.n, dtype=dtype, settings=settings,
                        max_new_tokens=args.max_new_tokens, chat_template=args.chat_template, rounds=args.rounds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"rows": rows, "args": vars(args), "provenance": provenance()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
