"""Decode a prompt file with one decoding strategy; write generations and statistics.

Example::

    mtpsd decode --checkpoint results/runs/tiny/checkpoint --prompts results/data/test.jsonl \
        --strategy confadapt --k 16 --tau 0.9 --max-new-tokens 256 --limit 50 \
        --out results/runs/tiny/decode/confadapt-tau0.9.jsonl

Writes OUT (one JSON row per prompt) and OUT's stem + ``.summary.json`` (pooled stats).
"""

from __future__ import annotations

from mtpsd.decoding.common import CONVENTION_HELP, CONVENTIONS, STRATEGIES
from mtpsd.decoding.select import CHOICES, ENV


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (model + tokenizer)")
    p.add_argument("--prompts", required=True, help="JSONL with a 'question' (or 'prompt') field per row")
    p.add_argument("--strategy", choices=STRATEGIES, default="confadapt", help="decoding strategy")
    p.add_argument("--k", type=int, default=16, help="static k / ConfAdapt k_max / verify proposal length")
    p.add_argument("--tau", type=float, default=0.9, help="ConfAdapt confidence threshold")
    p.add_argument("--max-new-tokens", type=int, default=256, help="generation budget per prompt")
    p.add_argument("--chat-template", action="store_true", help="wrap questions in the tokenizer's chat template")
    p.add_argument("--limit", type=int, default=None, help="decode only the first N prompts")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float64")
    p.add_argument("--engine", choices=CHOICES, default="auto",
                   help=f"decoder: graphs (CUDA graphs), eager (no graphs: the way out if a GPU-only step fails), "
                        f"reference (DynamicCache, slow); auto = ${ENV}, else graphs on CUDA, eager elsewhere")
    p.add_argument("--convention", choices=CONVENTIONS, default="project", help=CONVENTION_HELP)
    p.add_argument("--out", required=True, help="output JSONL")


def run(args) -> int:
    from mtpsd.decoding.runner import decode_file, summary_path

    s = decode_file(args.checkpoint, args.prompts, args.out, strategy=args.strategy, k=args.k, tau=args.tau,
                    max_new_tokens=args.max_new_tokens, chat_template=args.chat_template, limit=args.limit,
                    device=args.device, dtype=args.dtype, engine=args.engine, convention=args.convention)
    print(f"decoded {s['n_generations']} prompts ({s['engine']} engine, {s['convention']} convention): "
          f"{s['tokens']} tokens, effective k {s['eff_k_mean']:.2f} (sd {s['eff_k_sd']:.2f}; project's accounting "
          f"{s['eff_k_project']:.2f}, authors' {s['eff_k_authors']:.2f}), {s['tokens_per_s']:.1f} tok/s -> "
          f"{args.out}, {summary_path(args.out)}")
    return 0
