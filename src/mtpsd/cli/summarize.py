"""Collect evaluation JSONs and training metrics into tidy CSVs.

Example::

    mtpsd summarize --evals results/runs/*/eval/*/*/*.json \
        --train-metrics results/runs/*/train_metrics.jsonl \
        --decodes results/runs/*/decode/*.summary.json --out-dir results/summary

Writes ``results.csv`` (paper_results.csv columns first, then extras),
``train_metrics.csv`` (one row per logged training step, ``run`` column) and
``speed.csv`` (the batch-1 speed runs of the decode rule).
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--evals", nargs="*", default=[], help="result JSONs of mtpsd evaluate")
    p.add_argument("--train-metrics", nargs="*", default=[], help="train_metrics.jsonl files (one per run)")
    p.add_argument("--decodes", nargs="*", default=[], help="decode summaries (*.summary.json): speed.csv")
    p.add_argument("--out-dir", required=True, help="folder for results.csv, train_metrics.csv, speed.csv")


def run(args) -> int:
    from mtpsd.reporting.summarize import write_summary

    res, train = write_summary(args.evals, args.train_metrics, args.out_dir, args.decodes)
    print(f"{len(args.evals)} evaluations -> {res}; {len(args.train_metrics)} runs -> {train}; "
          f"{len(args.decodes)} speed runs -> speed.csv")
    return 0
