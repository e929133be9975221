"""How many CUDA graphs the GPU check's decoding sweep captures, and how much pool memory they
need, planned on CPU before any GPU time is spent.

    python -m benchmarks.gpu.graph_plan [--mask-budget 128] [--batches 1 16 64] [--json OUT]

It replays the throughput sweep's engine calls (``throughput.methods``: our k=1, Static k,
replayed ConfAdapt with and without the mask budget; warm-up at full length, as the sweep
does) through ``DecodeEngine`` with a counting backend at the CUDA-graph seam on a tiny random
model: a pass's shape (batch bucket, width, attended KV length, read-out columns) does not
depend on the architecture, so the captured shapes are those of the GPU run. Pool memory per
architecture is estimated from the engine's own bound of one pass (``engine.pass_bytes``): the
graphs share one pool and replay one at a time, so the pool needs about the largest pass plus
every graph's output (estimate; the GPU check measures it: ``graph_pool_bytes``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from benchmarks.gpu.common import random_model
from benchmarks.gpu.replay import Replayer
from benchmarks.gpu.throughput import methods

REPO = Path(__file__).resolve().parents[2]
ARCHS = ["benchmarks/arch/llama31_8b.json", "benchmarks/arch/qwen3_4b.json"]


class EagerGraphs:
    """The ``graphs.CudaGraphs`` interface, run eagerly (the shapes are what is counted)."""

    name = "eager-stand-in"

    def capture(self, fn, inputs):
        from mtpsd.decoding.graphs import Captured

        return Captured(fn, inputs, fn(*inputs))

    def replay(self, g):
        g.out.copy_(g.fn(*g.inputs))
        return g.out

    def release(self):
        pass


def sweep_keys(*, batches, prompt_len: int, new_tokens: int, static_ks, k_max: int, mask_budget: int | None,
               replay_mean: float = 3.3) -> list[tuple]:
    """The graph keys (B, W, kv, K, bda) of every capture of the sweep's engine, in order
    (a key appears again when a larger batch reallocated the cache and dropped the graphs)."""
    from mtpsd.decoding.engine import DecodeEngine

    model = random_model(REPO / "benchmarks/arch/tiny_llama.json", device="cpu", dtype=torch.float32)
    engine = DecodeEngine(model, mtp_token_id=int(model.config.mtp_token_id), max_batch_size=max(batches),
                          max_seq_len=prompt_len + new_tokens + 2 * k_max + 8, k_max=k_max, graphs=True,
                          graph_backend=EagerGraphs())
    captured = []
    capture = engine._capture
    engine._capture = lambda key, inputs: captured.append(key) or capture(key, inputs)
    replayer = Replayer.from_distribution(replay_mean, k_max, rows=max(batches))
    g = torch.Generator().manual_seed(0)
    for b in batches:
        prompts = torch.randint(3, 500, (b, prompt_len), generator=g).tolist()
        for m in methods(static_ks, k_max, 0.9, hf_static=False, budget_variant=mask_budget is not None):
            if m.kind != "ours":
                continue
            engine.mask_budget = mask_budget if m.budget else None
            kw = {"accept_fn": replayer} if m.strategy == "confadapt" else {}
            engine.generate(prompts, strategy=m.strategy, k=m.k, tau=m.tau, max_new_tokens=new_tokens,
                            stop_token_ids=(), **kw)
    return captured


def pool_estimate(keys: list[tuple], arch: str, dtype_bytes: int = 2) -> dict:
    """Largest pass (engine.pass_bytes) plus all outputs, for the architecture in ``arch``."""
    from mtpsd.decoding.sizes import pass_bytes

    cfg = json.loads((REPO / arch).read_text())
    heads = cfg["num_attention_heads"]
    per = [pass_bytes(batch=B, width=W, kv=kv, read=K, heads=heads, kv_heads=cfg.get("num_key_value_heads", heads),
                      hidden=cfg["hidden_size"], intermediate=cfg["intermediate_size"], vocab=cfg["vocab_size"],
                      dtype_bytes=dtype_bytes) for B, W, kv, K, _ in keys]
    outputs = sum(2 * B * K * 8 for B, _, _, K, _ in set(keys))
    return {"largest_pass_gib": max(per) / 2 ** 30, "outputs_bytes": outputs,
            "pool_estimate_gib": (max(per) + outputs) / 2 ** 30}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--static-k", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--k-max", type=int, default=16)
    p.add_argument("--mask-budget", type=int, nargs="*", default=[None, 64, 128, 256],
                   help="budgets to plan for (the GPU check uses its measured ridge)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = []
    for budget in args.mask_budget or [None]:
        keys = sweep_keys(batches=args.batches, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                          static_ks=args.static_k, k_max=args.k_max, mask_budget=budget)
        row = {"mask_budget": budget, "captures": len(keys), "graphs": len(set(keys)),
               "by_batch": {str(b): sum(1 for k in set(keys) if k[0] == b) for b in sorted({k[0] for k in keys})},
               "archs": {Path(a).stem: pool_estimate(keys, a) for a in ARCHS}}
        out.append(row)
        pools = ", ".join(f"{n} {v['pool_estimate_gib']:.2f} GiB" for n, v in row["archs"].items())
        print(f"mask budget {budget}: {row['captures']} captures of {row['graphs']} distinct shapes (per batch "
              f"bucket {row['by_batch']}); "
              f"pool estimate (bf16) {pools}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
