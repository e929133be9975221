"""Packed ``mtp_loss`` vs the naive per-region loop: supervised tokens/s (fwd + bwd) and peak memory.

Both compute the same hard-teacher loss on the same supervised positions (design.md:
the naive definition runs student and teacher once per region). Model: the tiny
architecture of ``config/config.yaml`` (TinyModelConfig defaults), random weights.
Each method runs in its own process; memory is the peak resident set size above the
level after building the models and inputs (CPU) or ``torch.cuda.max_memory_allocated``.

Example::

    python benchmarks/objective_speed.py --out results/benchmarks/objective_speed.json
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import resource
import time

import torch
import torch.nn.functional as F


def build(device, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mtpsd.config import TinyModelConfig

    t = TinyModelConfig()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                      num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads,
                      num_key_value_heads=t.num_heads, max_position_embeddings=t.max_position_embeddings,
                      attn_implementation="sdpa")
    student = LlamaForCausalLM(cfg).to(device)
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    return student, teacher, t.vocab_size - 1


def naive_step(student, teacher, x, positions, k, mtp):
    """Per-region loop: student on x[:p+1] + masks, teacher on x[:p+1] + proposals."""
    allowed = torch.tensor([i for i in range(student.config.vocab_size) if i != mtp], device=x.device)
    terms = []
    for b in range(x.shape[0]):
        for p in positions[b].tolist():
            ids = torch.cat([x[b, : p + 1], torch.full((k - 1,), mtp, device=x.device)])[None]
            s_lp = F.log_softmax(student(input_ids=ids).logits[0, p:p + k][:, allowed].float(), -1)
            prop = allowed[s_lp.detach().argmax(-1)]
            with torch.no_grad():
                t_ids = torch.cat([x[b, : p + 1], prop[: k - 1]])[None]
                tgt = teacher(input_ids=t_ids).logits[0, p:p + k][:, allowed].argmax(-1)
            terms.append(-s_lp.gather(-1, tgt[:, None])[:, 0])
    loss = torch.cat(terms).mean()
    loss.backward()
    return sum(len(t) for t in terms)


def packed_step(student, teacher, x, positions, k, mtp):
    from mtpsd.objective import mtp_loss

    out = mtp_loss(student, teacher, x, k=k, prediction_positions=positions, mtp_token_id=mtp)
    out.loss.backward()
    return out.targets.numel()


def worker(method, args, q):
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    student, teacher, mtp = build(dev)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(3, mtp, (args.batch, args.length), generator=g).to(dev)
    from mtpsd.layout import sample_batch_layout

    k, positions = sample_batch_layout([args.length] * args.batch, k_max=args.k, num_regions=args.regions,
                                       random_k=False, generator=g)
    fn = packed_step if method == "packed" else naive_step
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # models and inputs built
    fn(student, teacher, x, positions, k, mtp)  # warm-up
    student.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0, tokens = time.perf_counter(), 0
    for _ in range(args.repeats):
        tokens += fn(student, teacher, x, positions, k, mtp)
        student.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    mem = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
           else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024)
    q.put({"method": method, "supervised_tokens": tokens, "seconds": dt, "tokens_per_s": tokens / dt,
           "peak_memory_mb": mem / 2**20,
           "memory_kind": "cuda_max_allocated" if dev.type == "cuda" else "peak_rss_above_models_built"})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=160, help="tokens per text N")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--regions", type=int, default=10, help="regions per text M = N / (2 k_max)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    rows = []
    for method in ("packed", "naive"):
        q = ctx.Queue()
        proc = ctx.Process(target=worker, args=(method, args, q))
        proc.start()
        rows.append(q.get())
        proc.join()
    speedup = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    print(f"{'method':8s} {'sup. tokens':>12s} {'seconds':>9s} {'tokens/s':>10s} {'peak MB':>9s}")
    for r in rows:
        print(f"{r['method']:8s} {r['supervised_tokens']:12d} {r['seconds']:9.2f} {r['tokens_per_s']:10.1f} "
              f"{r['peak_memory_mb']:9.1f}")
    print(f"packed speed-up: {speedup:.1f}x")
    from mtpsd.io import atomic_write_json, provenance

    atomic_write_json(args.out, {"rows": rows, "speedup": speedup, "settings": vars(args),
                                 "provenance": provenance(seed=0)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
