"""Preflight before any GPU hour: GPUs and free memory against the training and evaluation
memory plans, free disk, hub access and a token for gated datasets, nltk data, lm-eval task
names, library versions. Prints one checklist; exit 1 with the first thing to fix.

Example::

    mtpsd doctor --config config/config.yaml --config config/paper.yaml --config config/published.yaml
    mtpsd doctor --json '<merged config>' --out results/doctor.txt      # as a workflow rule
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--config", action="append", default=[], help="YAML file; repeat to overlay")
    p.add_argument("--json", help="merged config as a JSON string (what Snakemake passes)")
    p.add_argument("--results", default="results", help="folder the DAG writes (its disk is checked)")
    p.add_argument("--gpu-memory", type=float, default=None,
                   help="GiB to plan for instead of the GPU's free memory (e.g. 79.6 to check an 80 GB GPU from here)")
    p.add_argument("--out", help="also write the checklist here")


def run(args) -> int:
    from mtpsd.config import merge_sources
    from mtpsd.doctor import render, run_checks
    from mtpsd.io import atomic_write_text

    checks = run_checks(merge_sources(args.config, args.json), results_dir=args.results,
                        gpu_memory_gib=args.gpu_memory)
    text = render(checks)
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
    return 1 if any(c.ok is False for c in checks) else 0
