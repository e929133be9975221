"""Decoding speed at batch 1: HF greedy vs mtpsd static / ConfAdapt / verify, interleaved.

    python benchmarks/decode_speed.py --checkpoint results/runs/tiny/checkpoint \
        --prompts results/data/test.jsonl --n 8 --max-new-tokens 64 --out results/bench/decode_speed.json
    python benchmarks/decode_speed.py --gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf --chat-template ...
    python benchmarks/decode_speed.py --random-arch benchmarks/arch/llama31_8b.json \
        --tokenizer results/runs/tiny/checkpoint --device cuda --dtype bfloat16 ...

``--random-arch`` builds a randomly initialised model from a config file (for a
paper-sized architecture whose weights are not at hand): Static-k and verify timings
do not depend on the weights, ConfAdapt chunk sizes do (random weights: chunks of 1).

Same model, same prompts, one process; for every prompt each method runs once in turn
(interleaved, so drift in machine load hits all methods alike) after one warm-up
round. Reported per method: effective k (tokens / forward passes, pooled), tokens/s
(tokens / wall time), speedup = tokens/s over HF greedy's, efficiency = speedup / eff k.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def load(args):
    from mtpsd.checkpoint import load_checkpoint, resolve_device, resolve_dtype

    if args.checkpoint:
        model, tok = load_checkpoint(args.checkpoint, dtype=args.dtype, device=args.device)
    elif args.random_arch:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        if not args.tokenizer:
            raise SystemExit("--random-arch needs --tokenizer (any tokenizer whose ids fit the vocab)")
        dev = resolve_device(args.device)
        cfg = AutoConfig.from_pretrained(args.random_arch)
        torch.manual_seed(0)
        with torch.device(dev):
            model = AutoModelForCausalLM.from_config(cfg, dtype=resolve_dtype(args.dtype, dev),
                                                     attn_implementation="sdpa").eval()
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        if len(tok) >= cfg.vocab_size:
            raise SystemExit(f"tokenizer has {len(tok)} ids, the architecture only {cfg.vocab_size}")
        model.config.mtp_token_id = cfg.vocab_size - 1  # an id the tokenizer never produces
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = Path(args.gguf)
        dev = resolve_device(args.device)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = model.to(dev, resolve_dtype(args.dtype, dev)).eval()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    mtp = getattr(model.config, "mtp_token_id", None)
    if mtp is None:
        try:
            from mtpsd.mtp_token import add_mtp_token

            mtp = add_mtp_token(model, tok, seed=0)
        except ImportError:  # untrained anyway: any non-emitted id works as the mask input
            mtp = len(tok) - 1
            print(f"no mtp_token_id: using id {mtp} as <MTP> (untrained MTP: short ConfAdapt chunks)")
    return model, tok, int(mtp)


def methods(args):
    out = [("hf-greedy", None, 1, 0.0), ("static-k1", "static", 1, 0.0)]
    out += [(f"static-k{k}", "static", k, 0.0) for k in (2, 3, 4)]
    out += [(f"confadapt-tau{t}", "confadapt", args.k_max, t) for t in args.taus]
    out += [(f"verify-k{k}", "verify", k, 0.0) for k in args.verify_k]
    return out


def run_one(model, ids, mtp, name, strategy, k, tau, n_new, stop):
    from mtpsd.decoding import generate
    from mtpsd.decoding.common import sync

    if strategy is None:
        sync(model.device)
        t0 = time.perf_counter()
        out = model.generate(ids, do_sample=False, max_new_tokens=n_new, eos_token_id=list(stop),
                             pad_token_id=stop[0], suppress_tokens=[mtp])
        sync(model.device)
        n = out.shape[1] - ids.shape[1]
        return n, n, time.perf_counter() - t0
    r = generate(model, ids, mtp_token_id=mtp, strategy=strategy, k=k, tau=tau, max_new_tokens=n_new,
                 stop_token_ids=stop)
    return len(r.tokens), r.forward_passes, r.wall_time_s, r.chunk_sizes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint directory")
    src.add_argument("--gguf", help="GGUF file (SmolLM2)")
    src.add_argument("--random-arch", help="HF config.json of an architecture to initialise at random")
    p.add_argument("--tokenizer", help="tokenizer directory for --random-arch")
    p.add_argument("--prompts", required=True, help="JSONL with 'question' or 'prompt'")
    p.add_argument("--n", type=int, default=8, help="number of prompts")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--chat-template", action="store_true")
    p.add_argument("--k-max", type=int, default=16)
    p.add_argument("--taus", type=float, nargs="+", default=[0.9, 0.5, 0.1])
    p.add_argument("--verify-k", type=int, nargs="+", default=[4])
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", required=True, help="results JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mtpsd.data.prompts import encode_prompt
    from mtpsd.io import atomic_write_json, provenance, read_jsonl

    model, tok, mtp = load(args)
    stop = (int(tok.eos_token_id),)
    rows = read_jsonl(args.prompts)[: args.n]
    prompts = []
    for r in rows:
        ids = encode_prompt(tok, r.get("question") or r["prompt"], chat_template=args.chat_template)
        prompts.append(torch.tensor([ids], device=model.device))
    ms = methods(args)
    with torch.no_grad():
        for m in ms:  # warm-up round
            run_one(model, prompts[0], mtp, *m, min(8, args.max_new_tokens), stop)
        acc = {m[0]: {"tokens": 0, "passes": 0, "wall": 0.0, "chunks": []} for m in ms}
        for ids in prompts:
            for m in ms:
                res = run_one(model, ids, mtp, *m, args.max_new_tokens, stop)
                a = acc[m[0]]
                a["tokens"] += res[0]
                a["passes"] += res[1]
                a["wall"] += res[2]
                a["chunks"] += res[3] if len(res) > 3 else [1] * res[0]
    base = acc["hf-greedy"]["tokens"] / acc["hf-greedy"]["wall"]
    table = []
    for name, a in acc.items():
        tps = a["tokens"] / a["wall"]
        eff = a["tokens"] / a["passes"]
        sd = float(torch.tensor(a["chunks"], dtype=torch.float64).std()) if len(a["chunks"]) > 1 else 0.0
        table.append({"method": name, "tokens": a["tokens"], "forward_passes": a["passes"], "eff_k": eff,
                      "eff_k_sd": sd, "tokens_per_s": tps, "speedup": tps / base, "efficiency": tps / base / eff,
                      "wall_s": a["wall"]})
    print(f"{'method':<22}{'eff_k':>7}{'tok/s':>9}{'speedup':>9}{'effic.':>8}{'tokens':>8}")
    for r in table:
        print(f"{r['method']:<22}{r['eff_k']:>7.2f}{r['tokens_per_s']:>9.1f}{r['speedup']:>9.2f}"
              f"{r['efficiency']:>8.2f}{r['tokens']:>8d}")
    atomic_write_json(args.out, {
        "model": args.checkpoint or args.gguf or args.random_arch, "n_prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "device": str(model.device), "dtype": str(next(model.parameters()).dtype), "mtp_token_id": mtp,
        "results": table, "provenance": provenance(threads=args.threads),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
