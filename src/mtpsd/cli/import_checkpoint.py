"""Import an MTP checkpoint to evaluate it without training (reviewer workflow).

Example::

    mtpsd import-checkpoint --source jwkirchenbauer/L3-1-8B-Magpie-MTP --out results/runs/l3-pub/checkpoint
    mtpsd import-checkpoint --source path/to/ckpt --mtp-token '<|reserved_special_token_0|>' \
        --out results/runs/other/checkpoint

The authors' published checkpoints need no mask flag (mtpsd.published.PUBLISHED knows
their mask and end ids); the weights keep the source's dtype unless --dtype says otherwise.
"""

from __future__ import annotations


def add_arguments(p) -> None:
    from mtpsd.published import IMPORT_DTYPES

    p.add_argument("--source", required=True, help="hub id, local checkpoint directory, or .gguf file")
    p.add_argument("--out", required=True, help="directory to write (save_pretrained format)")
    mask = p.add_mutually_exclusive_group()
    mask.add_argument("--mtp-token", default=None,
                      help="mask token string, for checkpoints with no mtp_token_id and no registry entry")
    mask.add_argument("--mtp-token-id", type=int, default=None, help="mask token id (instead of --mtp-token)")
    p.add_argument("--dtype", default="auto", choices=IMPORT_DTYPES,
                   help="dtype of the saved weights; auto keeps the source's (bf16 stays bf16)")


def run(args) -> int:
    from mtpsd.published import import_mtp_checkpoint

    mtp_token = args.mtp_token if args.mtp_token_id is None else args.mtp_token_id
    info = import_mtp_checkpoint(args.source, args.out, mtp_token=mtp_token, dtype=args.dtype)
    print(f"imported {info['architecture']} ({info['parameters']:,} parameters, {info['dtype']}, "
          f"mtp_token_id={info['mtp_token_id']}, end ids {info['end_token_ids']}) from {args.source} -> {args.out}")
    return 0
