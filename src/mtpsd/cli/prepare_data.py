"""Build results/data/{train,validation,test}.jsonl and stats.json from the data config.

Example::

    mtpsd prepare-data --config results/config.json --train results/data/train.jsonl \
        --validation results/data/validation.jsonl --test results/data/test.jsonl \
        --stats results/data/stats.json
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--config", required=True, help="resolved config JSON (mtpsd resolve-config)")
    p.add_argument("--train", required=True, help="training rows JSONL to write")
    p.add_argument("--validation", required=True, help="validation rows JSONL to write")
    p.add_argument("--test", required=True, help="test rows JSONL to write")
    p.add_argument("--stats", required=True, help="sizes/sources/provenance JSON to write")


def run(args) -> int:
    from mtpsd.config import load_resolved
    from mtpsd.data.prepare import prepare_data

    cfg = load_resolved(args.config)
    info = prepare_data(cfg, train=args.train, validation=args.validation, test=args.test, stats=args.stats)
    sizes = info["sizes"]
    print(f"{cfg.data.source}: train {sizes['train']}, validation {sizes['validation']}, "
          f"test {sizes['test']} ({cfg.data.test_source}) -> {args.train}")
    return 0
