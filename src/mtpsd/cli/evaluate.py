"""Evaluate one checkpoint on one lm-eval task with one decoding setting; write one JSON.

Example::

    mtpsd evaluate --config results/runs/tiny/config.json --checkpoint results/runs/tiny/checkpoint \
        --task mtpsd_synth_math --setting confadapt-tau0.9 \
        --out results/runs/tiny/eval/mtpsd_synth_math/final/confadapt-tau0.9.json

``--data FILE`` evaluates on a local JSONL instead of the task's hub dataset;
creative writing also takes ``--base-model`` (perplexity) and ``--reference`` (the k=1
result file, for ROUGE-L against the k=1 story).
"""

from __future__ import annotations


def add_arguments(p) -> None:
    from mtpsd.decoding.common import CONVENTION_HELP, CONVENTIONS
    from mtpsd.decoding.select import CHOICES, ENV

    p.add_argument("--config", required=True, help="run's resolved config JSON")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (mtp_init, checkpoint, step_N)")
    p.add_argument("--task", required=True, help="task name (mtpsd_synth_math, mtpsd_gsm8k_cot, ...)")
    p.add_argument("--setting", required=True, help="static-k{k} | confadapt-tau{tau} | verify-k{k}")
    p.add_argument("--data", help="local JSONL for the task (default: config eval.data_files, else the hub)")
    p.add_argument("--limit", type=int, help="documents (default: config eval.limit)")
    p.add_argument("--base-model", help="frozen base model directory (creative writing perplexity)")
    p.add_argument("--reference", help="k=1 result JSON of the same checkpoint (creative writing ROUGE-L)")
    p.add_argument("--engine", choices=CHOICES, default=None,
                   help=f"decoder (default: config decode.engine): graphs (CUDA graphs), eager (no graphs: the way "
                        f"out if a GPU-only step fails), reference (DynamicCache, slow); auto = ${ENV}, else graphs "
                        f"on CUDA, eager elsewhere")
    p.add_argument("--ckpt", help="checkpoint label recorded in the result: step0 | final | step{N} (default: "
                                   "from the directory name; step0 of an imported checkpoint is its base model)")
    p.add_argument("--convention", choices=CONVENTIONS, default=None,
                   help=f"default: config decode.convention; {CONVENTION_HELP}")
    p.add_argument("--out", required=True, help="result JSON to write")


def run(args) -> int:
    from mtpsd.config import load_resolved
    from mtpsd.evaluation.evaluate import evaluate
    from mtpsd.io import atomic_write_json

    cfg = load_resolved(args.config)
    out = evaluate(cfg, args.checkpoint, args.task, args.setting, data_file=args.data, limit=args.limit,
                   base_model=args.base_model, reference=args.reference, engine=args.engine, ckpt=args.ckpt,
                   convention=args.convention)
    atomic_write_json(args.out, out)
    res = {k: round(v, 4) for k, v in out["results"][args.task].items()
           if isinstance(v, float) and "stderr" not in k}
    ds = out["decode_stats"]
    print(f"{args.task} {args.setting} on {out['ckpt']} ({out['engine']} engine, {out['convention']} convention): "
          f"{res} eff_k={ds.get('eff_k_mean')} (project's accounting {ds.get('eff_k_project')}, authors' "
          f"{ds.get('eff_k_authors')}) "
          f"({out['n_docs']} docs, {out['wall_s']:.1f}s) -> {args.out}")
    return 0
