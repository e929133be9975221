"""Load a pretrained base model (hub id, local directory, or .gguf file) and save it as a
plain Hugging Face directory with its tokenizer and ``base_metrics.json``.

Example::

    mtpsd import-base --source HuggingFaceTB/SmolLM2-135M-Instruct --out results/models/smol
    mtpsd import-base --source path/to/SmolLM2-135M-Instruct.Q4_1.gguf --out results/models/smol
"""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--source", required=True, help="hub id, local model directory, or .gguf file")
    p.add_argument("--out", required=True, help="directory to write (save_pretrained format)")


def run(args) -> int:
    from mtpsd.mtp_token import import_base

    info = import_base(args.source, args.out)
    print(f"imported {info['architecture']} ({info['parameters']:,} parameters) from {args.source} -> {args.out}")
    return 0
