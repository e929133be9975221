"""Print a run's expected peak GPU memory: training (breakdown, the disk its checkpoints need,
GPU-hours from a measured training segment, else "unmeasured") and evaluation (per task: the
batch the evaluation memory plan picks and its peak); no weights are loaded.

Example::

    mtpsd plan-memory --config config/config.yaml --config config/paper.yaml --run l3-magpie \
        --arch benchmarks/arch/llama31_8b.json --gpus 1 --gpu-memory 80
    mtpsd plan-memory --config config/config.yaml --config config/paper.yaml --config config/published.yaml \
        --run qwen3-4b-mtp --stage eval --gpu-memory 79.6 --json plan.json

Exit status 1 when ``--gpu-memory`` is given and the training plan does not fit (the message
names settings that would), or a task does not fit even at batch 1. A run that evaluates an
imported checkpoint (``checkpoint:``) has no training plan. ``--stage eval`` without
``--gpu-memory`` plans for an 80 GB GPU (79.6 GiB).
"""

from __future__ import annotations

import glob


def add_arguments(p) -> None:
    p.add_argument("--config", action="append", required=True,
                   help="YAML file (repeat to overlay) or one resolved config JSON")
    p.add_argument("--run", help="named run whose overrides to apply")
    p.add_argument("--arch", help="model config: a checkpoint directory or config.json "
                                  "(default: model.pretrained, read offline from the HF cache)")
    p.add_argument("--gpus", type=int, default=None, help="GPUs per run (default: the run's accelerate config, else 1)")
    p.add_argument("--no-fsdp", action="store_true", help="with --gpus > 1: plain data parallel (no sharding)")
    p.add_argument("--gpu-memory", type=float, default=None, help="GiB per GPU (an 80 GB H100 has 79.6 GiB, a 141 GB H200 ~139); say whether the plan fits")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="plan for CUDA (default) or CPU")
    p.add_argument("--throughput", action="append", default=None,
                   help="benchmarks/train_segment.py result(s) for GPU-hours "
                        "(default: results/bench/gpu/*/train_*.json)")
    p.add_argument("--stage", choices=("all", "train", "eval"), default="all",
                   help="which plan: training, evaluation (per task: batch and peak) or both (default)")
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help="evaluation: longest prompt in tokens for every task (default: measured where known "
                        "(GSM8K), else an allowance of 4096)")
    p.add_argument("--json", dest="json_out", help="also write the plan as JSON here")


def _load(paths, run):
    from mtpsd.config import load_config, load_resolved

    if len(paths) == 1 and paths[0].endswith(".json"):
        return load_resolved(paths[0])
    return load_config(paths, run=run)


def run(args) -> int:
    from mtpsd.errors import MtpsdError
    from mtpsd.io import atomic_write_json

    cfg = _load(args.config, args.run)
    from mtpsd.evaluation.memory_plan import arch_source

    arch = args.arch or arch_source(cfg)
    if arch is None:
        raise MtpsdError("model.source is scratch: pass --arch with the base model directory (results/models/<name>)")
    record, status = {}, 0
    if args.stage in ("all", "train") and not getattr(cfg, "checkpoint", None):
        record, status = _train(args, cfg, arch)
    if args.stage in ("all", "eval"):
        record["eval"], bad = _eval(args, cfg, arch)
        status = max(status, bad)
    if args.json_out:
        atomic_write_json(args.json_out, record)
    return status


def _eval(args, cfg, arch) -> tuple[dict, int]:
    from mtpsd.evaluation import memory_plan as em
    from mtpsd.evaluation.plan import PLAN_GPU_MEMORY_GIB

    gib = args.gpu_memory if args.gpu_memory is not None else PLAN_GPU_MEMORY_GIB
    shape = em.eval_shape(arch)
    plans = em.plan_tasks(shape, em.task_setups(cfg, device=args.device, prompt_tokens=args.prompt_tokens),
                          gib * em.GiB)
    print(em.render_tasks(shape, plans, gib * em.GiB))
    if cfg.eval.batch_size is not None:
        print(f"(eval.batch_size: {cfg.eval.batch_size} is set: evaluations use it instead of the planned batch)")
    return em.plans_json(shape, plans, gib * em.GiB), int(any(tp.plan is None for tp in plans))


def _train(args, cfg, arch) -> tuple[dict, int]:
    from mtpsd.errors import MtpsdError
    from mtpsd.training import memory_plan as mp

    shape = mp.model_shape(arch)
    fsdp = None if args.gpus is None else (args.gpus > 1 and not args.no_fsdp)
    setup = mp.setup_from_config(cfg, device=args.device, gpus=args.gpus, fsdp=fsdp)
    plan = mp.plan_memory(shape, setup)
    print(plan.table())
    tc = cfg.train
    disk = mp.disk_plan(shape, setup, steps=tc.steps, checkpoint_steps=cfg.eval.checkpoint_steps,
                        checkpoint_every=tc.checkpoint_every)
    print(f"disk: {mp.fmt_bytes(disk['peak_bytes'])} at most = {disk['snapshots']} evaluation snapshot(s) + final model "
          f"({mp.fmt_bytes(disk['model_bytes'])} each) + 3 x resume state ({mp.fmt_bytes(disk['resume_state_bytes'])}: "
          "weights + optimizer; the two newest are kept, a third while the next one is written)")
    files = args.throughput if args.throughput is not None else sorted(glob.glob("results/bench/gpu/*/train_*.json"))
    hours = mp.gpu_hours(shape, setup, files, steps=tc.steps)
    print(f"time: {hours}")
    verdict, status = None, 0
    if args.gpu_memory is not None:
        gpu = args.gpu_memory * mp.GiB
        try:
            mp.check_fits(shape, setup, gpu)
            verdict = f"fits: {plan.peak / mp.GiB:.1f} of {args.gpu_memory:g} GiB per GPU"
        except MtpsdError as e:
            verdict, status = str(e), 1
        print(verdict)
    return {"model": shape.__dict__, "setup": setup.__dict__, "parts_bytes": plan.parts,
            "overhead_bytes": plan.overhead, "peak_bytes": plan.peak, "disk": disk, "gpu_hours": hours,
            "gpu_memory_gib": args.gpu_memory, "verdict": verdict}, status
