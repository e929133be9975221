"""Write the expected device hours of the DAG's decoding work, from measured speed figures.

Example::

    mtpsd plan --config config/config.yaml --config config/paper.yaml --out -
    mtpsd plan --config config/config.yaml --config config/paper.yaml --gpu H100 --out results/plan.md

Work per rule and task = documents x generation budget / tokens per pass, batched as
``eval.batch_size`` says; hours come only from figures measured for the same model, dtype
and batch size (``results/bench/gpu/<gpu>/*.json`` with ``--gpu``; else the CPU figures).
The format of a figure file is in ``mtpsd.evaluation.plan``.
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--config", action="append", default=[], help="YAML file; repeat to overlay")
    p.add_argument("--json", help="merged config as a JSON string (what Snakemake passes)")
    p.add_argument("--gpu", help="use the GPU figures of results/bench/gpu/GPU/ (default: CPU figures)")
    p.add_argument("--bench-dir", default="results/bench", help="folder of measured speed JSONs")
    p.add_argument("--out", default="-", help="Markdown file to write ('-': print it)")


def run(args) -> int:
    from mtpsd.config import merge_sources
    from mtpsd.evaluation.plan import CPU, collect_figures, plan, render, resolve_runs
    from mtpsd.io import atomic_write_text

    raw = merge_sources(args.config, args.json)
    figures = collect_figures(args.bench_dir, gpu=args.gpu)
    device = args.gpu or CPU
    text = render(plan(resolve_runs(raw), figures, device=device), device=device, figures=figures)
    if args.out == "-":
        print(text, end="")
    else:
        atomic_write_text(args.out, text)
        print(f"plan -> {args.out}")
    return 0
