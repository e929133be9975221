"""Import a published MTP checkpoint to evaluate it without training (reviewer workflow).

Example::

    mtpsd import-checkpoint --source someone/llama-3.1-8b-mtp --out results/runs/l3-pub/checkpoint
    mtpsd import-checkpoint --source path/to/ckpt --mtp-token '<|reserved_special_token_0|>' \
        --out results/runs/l3-pub/checkpoint
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--source", required=True, help="hub id, local checkpoint directory, or .gguf file")
    p.add_argument("--out", required=True, help="directory to write (save_pretrained format)")
    p.add_argument("--mtp-token", default=None,
                   help="mask token string, only for checkpoints whose config has no mtp_token_id")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="dtype of the saved weights (bfloat16 halves disk for 4B/8B models)")


def run(args) -> int:
    from mtpsd.published import import_mtp_checkpoint

    info = import_mtp_checkpoint(args.source, args.out, mtp_token=args.mtp_token, dtype=args.dtype)
    print(f"imported {info['architecture']} ({info['parameters']:,} parameters, "
          f"mtp_token_id={info['mtp_token_id']}) from {args.source} -> {args.out}")
    return 0
