"""Decoding engine vs the DynamicCache reference decoders on CPU, interleaved in one process.

    python benchmarks/engine_cpu.py --tiny --out results/bench/engine_cpu_tiny.json
    python benchmarks/engine_cpu.py --gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf \
        --prompts data/gsm8k/test.jsonl --out results/bench/engine_cpu_smollm2.json

Settings: static k=1 and ConfAdapt (k_max, tau) at batch 1 (``single.generate_cached`` vs
``DecodeEngine``) and batched (``batch.generate_batch_cached`` vs ``DecodeEngine``). Every
round runs each (setting, decoder) once in turn after a warm-up round, so drift in machine
load hits both decoders alike; both decoders produce the same tokens and chunks (checked
here), so they do the same number of passes. Reported: tokens/s, engine / reference ratio,
and for batched ConfAdapt the cache length per row: the engine's (prompt + the row's own
fed-back tokens) against the reference's shared cache (longest prompt + the longest fed
chunk of every pass: holes).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch


def load(args):
    if args.gguf:
        from mtpsd.data.prompts import encode_prompt
        from mtpsd.mtp_token import add_mtp_token, load_base

        model, tok = load_base(args.gguf, dtype=torch.float32)
        mtp = add_mtp_token(model, tok, seed=0)
        rows = [json.loads(line) for line in Path(args.prompts).read_text().splitlines()[: args.n]]
        prompts = [encode_prompt(tok, r["question"], chat_template=True) for r in rows]
        return model.eval(), mtp, (tok.eos_token_id,), prompts
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=512, hidden_size=96, intermediate_size=256, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                      attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # confident read-outs, so ConfAdapt chunks vary
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 500) for _ in range(rng.randrange(20, 80))] for _ in range(args.n)]
    return model, 511, (), prompts


def reference_cache_len(prompts, results):
    """Final cache length per row of the shared ``DynamicCache`` of ``generate_batch_cached``:
    longest prompt, then every pass adds the longest chunk fed by a live row."""
    passes = [len(r.chunk_sizes) for r in results]
    length, out = max(map(len, prompts)), []
    for t in range(1, max(passes) + 1):  # pass t feeds the chunks of pass t-1
        for i, n in enumerate(passes):
            if n == t:
                out.append((i, length))
        live = [r.chunk_sizes[t - 1] for r, n in zip(results, passes) if n > t]
        length += max(live, default=0)
    return [v for _, v in sorted(out)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tiny", action="store_true", help="random 4-layer Llama (hidden 96), overhead-bound")
    src.add_argument("--gguf", help="SmolLM2-135M-Instruct GGUF file (real weights, untrained <MTP>)")
    p.add_argument("--prompts", help="GSM8K-style JSONL (with --gguf)")
    p.add_argument("--n", type=int, default=4, help="prompts (= the batch size of the batched runs)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--k-max", type=int, default=8)
    p.add_argument("--tau", type=float, default=0.9)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mtpsd.decoding.batch import generate_batch_cached
    from mtpsd.decoding.engine import DecodeEngine
    from mtpsd.decoding.single import generate_cached
    from mtpsd.io import atomic_write_json, provenance

    model, mtp, stops, prompts = load(args)
    engine = DecodeEngine(model, mtp_token_id=mtp, max_batch_size=len(prompts), k_max=args.k_max,
                          max_seq_len=max(map(len, prompts)) + args.max_new_tokens + 2 * args.k_max)
    settings = {"static-k1": ("static", 1), f"confadapt-k{args.k_max}-tau{args.tau}": ("confadapt", args.k_max)}

    def run(decoder, batched, strategy, k, n_new):
        kw = dict(strategy=strategy, k=k, tau=args.tau, max_new_tokens=n_new, stop_token_ids=stops)
        t0 = time.perf_counter()
        if decoder == "engine":
            res = engine.generate(prompts, **kw) if batched else [engine.generate([q], **kw)[0] for q in prompts]
        elif batched:
            res = generate_batch_cached(model, prompts, mtp_token_id=mtp, **kw)
        else:
            res = [generate_cached(model, torch.tensor([q]), mtp_token_id=mtp, **kw) for q in prompts]
        return res, time.perf_counter() - t0

    cases = [(name, batched, dec) for name in settings for batched in (False, True) for dec in ("reference", "engine")]
    acc = {c: {"tokens": 0, "passes": 0, "wall": 0.0, "results": None} for c in cases}
    with torch.no_grad():
        for c in cases:  # warm-up
            run(c[2], c[1], *settings[c[0]], 4)
        for _ in range(args.rounds):
            for c in cases:
                res, wall = run(c[2], c[1], *settings[c[0]], args.max_new_tokens)
                a = acc[c]
                a["tokens"] += sum(len(r.tokens) for r in res)
                a["passes"] += sum(r.forward_passes for r in res)
                a["wall"] += wall
                a["results"] = res
    table = []
    for name in settings:
        for batched in (False, True):
            ref, eng = acc[(name, batched, "reference")], acc[(name, batched, "engine")]
            same = [(r.tokens, r.chunk_sizes) for r in ref["results"]] == [(r.tokens, r.chunk_sizes)
                                                                            for r in eng["results"]]
            row = {"setting": name, "batch": len(prompts) if batched else 1, "same_output": same,
                   "tokens": eng["tokens"], "eff_k": eng["tokens"] / eng["passes"],
                   "reference_tok_s": ref["tokens"] / ref["wall"], "engine_tok_s": eng["tokens"] / eng["wall"]}
            row["engine_over_reference"] = row["engine_tok_s"] / row["reference_tok_s"]
            if batched:
                row["engine_cache_len"] = [r.extras["cache_len"] for r in eng["results"]]
                row["own_tokens_cache_len"] = [len(q) + len(r.tokens) - r.chunk_sizes[-1]
                                               for q, r in zip(prompts, eng["results"])]
                row["reference_cache_len"] = reference_cache_len(prompts, ref["results"])
            table.append(row)
    print(f"{'setting':<24}{'batch':>6}{'eff_k':>7}{'ref tok/s':>11}{'engine tok/s':>14}{'ratio':>7}  same")
    for r in table:
        print(f"{r['setting']:<24}{r['batch']:>6}{r['eff_k']:>7.2f}{r['reference_tok_s']:>11.1f}"
              f"{r['engine_tok_s']:>14.1f}{r['engine_over_reference']:>7.2f}  {r['same_output']}")
        if "engine_cache_len" in r:
            print(f"    cache len per row: engine {r['engine_cache_len']} (own tokens {r['own_tokens_cache_len']}),"
                  f" reference {r['reference_cache_len']}")
    atomic_write_json(args.out, {
        "model": args.gguf or "tiny random Llama (4 layers, hidden 96, vocab 512)", "n_prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens, "rounds": args.rounds, "results": table,
        "provenance": provenance(threads=args.threads),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
