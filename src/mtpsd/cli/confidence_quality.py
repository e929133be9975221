"""Student confidence vs teacher loss of its k-token proposal on validation prefixes.

Example::

    mtpsd confidence-quality --student results/runs/tiny/checkpoint --teacher results/runs/tiny/mtp_init \\
        --config results/runs/tiny/config.json --data results/data/validation.jsonl --k 4 --n 200 \\
        --out results/summary/confidence_quality_tiny.csv
"""

from __future__ import annotations

import torch

from mtpsd.io import atomic_path, read_json


def add_arguments(p) -> None:
    p.add_argument("--student", required=True, help="trained MTP checkpoint directory")
    p.add_argument("--teacher", required=True, help="step-0 checkpoint (results/runs/{run}/mtp_init)")
    p.add_argument("--config", required=True, help="run's resolved config JSON (chat template, max length, seed)")
    p.add_argument("--data", required=True, help="validation JSONL with question/answer")
    p.add_argument("--k", type=int, required=True, help="proposal length (k-1 masks)")
    p.add_argument("--n", type=int, required=True, help="number of validation prefixes")
    p.add_argument("--device", default=None, help="cpu / cuda (default: auto)")
    p.add_argument("--out", required=True, help="CSV to write")


def run(args) -> int:
    from mtpsd.evaluation.confidence_quality import confidence_quality
    from mtpsd.errors import MtpsdError
    from mtpsd.plotting.confidence import correlation

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    cfg = read_json(args.config)
    try:
        chat, max_len, seed = cfg["model"]["chat_template"], cfg["train"]["max_length"], cfg["seed"]
    except (KeyError, TypeError) as e:
        raise MtpsdError(f"{args.config}: missing key {e}") from None
    df = confidence_quality(args.student, args.teacher, args.data, k=args.k, n=args.n, chat_template=chat,
                            max_length=max_len, seed=seed, device=args.device)
    with atomic_path(args.out) as tmp:
        df.to_csv(tmp, index=False)
    c = correlation(df)
    print(f"{len(df)} prefixes -> {args.out}; Spearman rho={c['spearman_rho']:.3f}, Pearson r={c['pearson_r']:.3f}")
    return 0
