"""When FlexAttention can pay over sdpa: block sparsity of the packed masks at the paper's lengths.

    python benchmarks/flex_sparsity.py --out results/benchmarks/flex_sparsity.json

Measured (CPU, no kernel timing): for micro-batches sampled as training samples them (texts of
the full length N, k ~ U{2..k_max} per micro-batch, M regions per text), the ``BlockMask`` that
``mtpsd.flex`` builds (128 x 128 tiles, FlexAttention's default) for the student and the teacher,
and the share of its tiles FlexAttention skips (``mtpsd.flex.block_sparsity``; sdpa with a dense
mask computes every tile), beside the share of single (query, key) entries that are masked.

Estimated (arithmetic, not a timing): the attention's share of a training step's matmul FLOPs
for a paper architecture: per token and layer, ``4 L q_dim`` for the scores and the weighted sum
(computed over all L keys by sdpa's kernels, causal or not) against ``2 x`` the layer's weights;
the output heads (now on the read-out rows only) are left out, so the share is an upper bound.
The step time FlexAttention could save is at most ``sparsity x attention share``, before what it
costs (building a BlockMask per micro-batch, compiling its kernels per shape).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {  # name: (N, M, k_max, micro-batch, attention)
    "paper (N 160, M 5, k_max 16, micro-batch 8)": (160, 5, 16, 8, "causal"),
    "paper BDA (bidirectional masks)": (160, 5, 16, 8, "bidirectional"),
    "magpie (N 1024, M 32, k_max 16, micro-batch 1)": (1024, 32, 16, 1, "causal"),
}
ARCHS = ("llama31_8b.json", "qwen3_4b.json")


def sparsity_of(N: int, M: int, k_max: int, B: int, attention: str, samples: int, seed: int = 0) -> dict:
    from mtpsd.flex import block_mask, block_sparsity
    from mtpsd.layout import build_layout, sample_batch_layout

    g = torch.Generator().manual_seed(seed)
    rows = {"student": [], "teacher": [], "masked_entries": [], "L": []}
    for _ in range(samples):
        ids = torch.randint(3, 1000, (B, N), generator=g)
        k, pos = sample_batch_layout([N] * B, k_max=k_max, num_regions=M, random_k=True, generator=g)
        lay = build_layout(ids, pos, k=k, mtp_token_id=1000, attention=attention)
        rows["L"].append(lay.input_ids.shape[1])
        rows["teacher"].append(block_sparsity(block_mask(lay, causal=True)))
        rows["student"].append(block_sparsity(block_mask(lay, causal=lay.student_is_causal)))
        rows["masked_entries"].append(1.0 - float(lay.attn_mask.float().mean()))
    return {k: statistics.mean(v) for k, v in rows.items()} | {"L_max": max(rows["L"]), "samples": samples}


def attention_share(arch: str, L: float) -> float:
    """Attention score + weighted-sum FLOPs over (those + the layer's matmuls), per token."""
    cfg = json.loads((REPO / "benchmarks" / "arch" / arch).read_text())
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    linear = 2 * (h * q + 2 * h * kv + q * h + 3 * h * inter)
    attn = 4 * L * q
    return attn / (attn + linear)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=16, help="micro-batches per setting")
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from mtpsd.io import atomic_write_json, provenance

    res = {}
    for name, (N, M, k_max, B, attention) in SETTINGS.items():
        r = sparsity_of(N, M, k_max, B, attention, args.samples)
        r["attention_share"] = {a.split(".")[0]: attention_share(a, r["L"]) for a in ARCHS}
        r["saving_bound"] = {a: r["student"] * s for a, s in r["attention_share"].items()}
        res[name] = r
        shares = ", ".join(f"{a} {100 * s:.1f}%" for a, s in r["attention_share"].items())
        bounds = ", ".join(f"{a} {100 * s:.2f}%" for a, s in r["saving_bound"].items())
        print(f"{name}: mean L {r['L']:.0f} (max {r['L_max']}); tiles skipped: student {100 * r['student']:.1f}%, "
              f"teacher {100 * r['teacher']:.1f}%; entries masked {100 * r['masked_entries']:.1f}%; attention share "
              f"of the layers' matmul FLOPs {shares}; step time flex could save at most {bounds}", flush=True)
    atomic_write_json(args.out, {"settings": res, "block": 128, "provenance": provenance(seed=0)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
