"""Train the tiny tokenizer and base Llama from scratch; save an HF model directory.

Example::

    mtpsd pretrain-base --config results/config.json --train results/data/train.jsonl \
        --validation results/data/validation.jsonl --test results/data/test.jsonl \
        --out results/models/tiny
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--config", required=True, help="resolved config JSON (mtpsd resolve-config)")
    p.add_argument("--train", required=True, help="training rows JSONL")
    p.add_argument("--validation", required=True, help="validation rows JSONL")
    p.add_argument("--test", required=True, help="test rows JSONL (greedy accuracy)")
    p.add_argument("--out", required=True, help="output model directory (gets base_metrics.json)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def run(args) -> int:
    from mtpsd.config import load_resolved
    from mtpsd.io import read_jsonl
    from mtpsd.pretrain import pretrain_base

    cfg = load_resolved(args.config)
    fields = ("id", "question", "answer")
    rows = {k: read_jsonl(getattr(args, k), required=fields) for k in ("train", "validation", "test")}
    m = pretrain_base(cfg, rows["train"], rows["validation"], rows["test"], args.out, threads=args.threads)
    print(f"pretrained {m['parameters']} parameters in {m['train_wall_s']:.0f} s; "
          f"greedy test accuracy {m['test_accuracy']:.3f} ({m['test_correct']}/{m['test_n']}) -> {args.out}")
    return 0
