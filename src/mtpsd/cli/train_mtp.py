"""Self-distillation training of an MTP model (resumes from the newest checkpoint).

Example (one device; the same command under ``accelerate launch`` runs multi-GPU)::

    mtpsd train-mtp --config results/runs/tiny/config.json --init results/runs/tiny/mtp_init \
        --train results/data/train.jsonl --checkpoint-dir results/runs/tiny/checkpoints \
        --out results/runs/tiny/checkpoint --metrics results/runs/tiny/train_metrics.jsonl

    accelerate launch --config_file config/accelerate/fsdp.yaml -m mtpsd train-mtp ...
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--config", required=True, help="the run's resolved config JSON")
    p.add_argument("--init", required=True, help="step-0 checkpoint (base + <MTP>)")
    p.add_argument("--train", required=True, help="training JSONL (question, answer)")
    p.add_argument("--checkpoint-dir", required=True, help="intermediate checkpoints step_{N:06d}/")
    p.add_argument("--out", required=True, help="final checkpoint directory")
    p.add_argument("--metrics", required=True, help="train_metrics.jsonl to write")
    p.add_argument("--device", default=None, help="cpu | cuda | auto (default: auto)")
    p.add_argument("--gpu-memory", type=float, default=None,
                   help="GiB per device the memory plan must fit (default: the CUDA device's free memory)")


def run(args) -> int:
    import os

    # fewer fragmentation losses on CUDA (the memory plan allows 10%); the user's setting wins
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    from mtpsd.config import load_resolved
    from mtpsd.training.loop import train_mtp

    cfg = load_resolved(args.config)
    rows = train_mtp(cfg, init=args.init, train_path=args.train, checkpoint_dir=args.checkpoint_dir,
                     out=args.out, metrics_path=args.metrics, device=args.device,
                     gpu_memory=args.gpu_memory)
    last = rows[-1] if rows else {}
    print(f"trained {last.get('step', 0)} steps, final loss {last.get('loss', float('nan')):.4f} -> {args.out}")
    return 0
