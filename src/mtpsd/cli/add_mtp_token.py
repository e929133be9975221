"""Add the ``<MTP>`` token to a base model and save the step-0 MTP checkpoint.

Example::

    mtpsd add-mtp-token --config results/runs/tiny/config.json --base results/models/tiny \
        --out results/runs/tiny/mtp_init
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--config", required=True, help="the run's resolved config JSON (seed)")
    p.add_argument("--base", required=True, help="base model directory")
    p.add_argument("--out", required=True, help="checkpoint directory to write")


def run(args) -> int:
    import torch

    from mtpsd.config import load_resolved
    from mtpsd.mtp_token import add_mtp_token, load_base, save_model_dir

    cfg = load_resolved(args.config)
    model, tok = load_base(args.base, dtype=torch.float32)
    tid = add_mtp_token(model, tok, seed=cfg.train.seed)
    save_model_dir(model, tok, args.out)
    print(f"<MTP> = id {tid} ({model.config.mtp_token_slot}) -> {args.out}")
    return 0
