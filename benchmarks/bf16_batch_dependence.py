"""Does a prompt's output depend on its batch neighbours? Decoded alone and batched, per dtype.

    python benchmarks/bf16_batch_dependence.py --gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf \
        --prompts data/gsm8k/test.jsonl --n 32 --batch 8 --out results/bench/bf16_batch_dependence.json

In a batch, a row goes through matrix products and attention of other shapes than alone
(more rows, padded widths), and kernels of other shapes round differently; in bf16 such a
rounding difference can flip a near-tie argmax and the generations part. The script decodes
the same prompts with the engine (eager, the CPU default) alone and in batches of ``--batch``,
for each dtype and setting, and reports the share of prompts whose tokens differ and the
first position where they do. float32 is the control (the accuracy runs' dtype).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main(argv=None) -> int:
    from mtpsd import numerics

    numerics.apply()
    import torch

    from mtpsd.data.prompts import encode_prompt
    from mtpsd.decoding.engine import DecodeEngine
    from mtpsd.io import provenance
    from mtpsd.mtp_token import add_mtp_token, load_base

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", required=True)
    p.add_argument("--prompts", required=True, help="JSONL with 'question'")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    p.add_argument("--settings", nargs="+", default=["static-k1", "confadapt-tau0.9"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from mtpsd.settings import parse_setting

    rows = [json.loads(line) for line in Path(args.prompts).read_text().splitlines()[: args.n]]
    out = {"n_prompts": len(rows), "batch": args.batch, "max_new_tokens": args.max_new_tokens, "cells": [],
           "provenance": provenance(torch_threads=args.threads)}
    for dtype in args.dtypes:
        model, tok = load_base(args.gguf, dtype=getattr(torch, dtype))
        mtp = add_mtp_token(model, tok, seed=0)
        model.eval()
        prompts = [encode_prompt(tok, r["question"], chat_template=True) for r in rows]
        eng = DecodeEngine(model, mtp_token_id=mtp, max_batch_size=args.batch,
                           max_seq_len=max(map(len, prompts)) + args.max_new_tokens + 40)
        for setting in args.settings:
            strategy, k, tau = parse_setting(setting, k_max=4)
            kw = dict(strategy=strategy, k=k, tau=tau, max_new_tokens=args.max_new_tokens,
                      stop_token_ids=(tok.eos_token_id,), tokenizer=tok)
            t0 = time.perf_counter()
            alone = [eng.generate([q], **kw)[0] for q in prompts]
            t1 = time.perf_counter()
            batched = eng.generate(prompts, **kw)
            t2 = time.perf_counter()
            differ = [i for i, (a, b) in enumerate(zip(alone, batched)) if a.tokens != b.tokens]
            first = [next(j for j, (x, y) in enumerate(zip(alone[i].tokens + [None] * 999, batched[i].tokens))
                          if x != y) for i in differ]
            cell = {"dtype": dtype, "setting": setting, "differ": len(differ), "share": len(differ) / len(prompts),
                    "first_difference_at": first, "alone_s": t1 - t0, "batched_s": t2 - t1,
                    "tokens": sum(len(r.tokens) for r in alone)}
            out["cells"].append(cell)
            print(f"{dtype:<9} {setting:<18} {len(differ)}/{len(prompts)} prompts differ batched vs alone "
                  f"(first difference at token {first}); alone {t1 - t0:.0f} s, batched {t2 - t1:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
