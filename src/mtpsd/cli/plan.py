"""Print the expected device hours of the DAG's GPU work: per run, rule and task, and in total.

Example::

    mtpsd plan --config config/config.yaml --config config/paper.yaml --config config/published.yaml
    mtpsd plan --config config/config.yaml --config config/paper.yaml --gpu h200 --by-task --out results/plan.md

Hours come from figures measured for the same model, dtype, batch size and setting
(``results/bench/gpu/<gpu>/`` on a GPU; the packaged CPU figures on a CPU), else on a GPU from
the stated time model of ``mtpsd.evaluation.plan`` (each cell says which). The GPU: ``--gpu``,
else ``MTPSD_GPU``, else the one ``nvidia-smi -L`` finds, else the CPU where its measured figures
cover the work (tiny, SmolLM2), else an H100.
"""

from __future__ import annotations

import os


def add_arguments(p) -> None:
    p.add_argument("--config", action="append", default=[], help="YAML file; repeat to overlay")
    p.add_argument("--json", help="merged config as a JSON string (what Snakemake passes)")
    p.add_argument("--gpu", help="h100 | h200 | a100 (the time model), a folder of results/bench/gpu/ "
                                 "(measured figures), or cpu (default: MTPSD_GPU, else the GPU here, else auto)")
    p.add_argument("--bench-dir", default="results/bench", help="folder of measured speed JSONs")
    p.add_argument("--by-task", action="store_true", help="one row per task also for large configs")
    p.add_argument("--out", default="-", help="Markdown file to write ('-': print it)")


def run(args) -> int:
    from mtpsd.config import merge_sources
    from mtpsd.evaluation.plan import plan_text, resolve_runs
    from mtpsd.io import atomic_write_text
    from mtpsd.workflow_env import detect_gpus

    raw = merge_sources(args.config, args.json)
    requested = args.gpu or os.environ.get("MTPSD_GPU") or None
    names = () if requested else detect_gpus().names
    text = plan_text(resolve_runs(raw), requested=requested, gpu_names=names, bench_dir=args.bench_dir,
                     by_task=args.by_task)
    if args.out == "-":
        print(text, end="")
    else:
        atomic_write_text(args.out, text)
        print(f"plan -> {args.out}")
    return 0
