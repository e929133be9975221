"""Effective k and accuracy under both decoding conventions (issue 27): one table.

    python benchmarks/conventions.py --config results/runs/tiny/config.json \
        --checkpoint results/runs/tiny/checkpoint --task mtpsd_synth_math \
        --settings static-k4 confadapt-tau0.9 confadapt-tau0.7 verify-k4 --limit 100 \
        --out results/conventions/tiny

Each (setting, convention) is one ``mtpsd evaluate`` (``mtpsd.evaluation.conventions``):
accuracy as lm-eval scores it, effective k in the project's and the authors' accounting
from the same decode. Writes ``{out}/{setting}.{convention}.json`` (the evaluation results),
``{out}/conventions.json`` (the rows) and ``{out}/conventions.md`` (the table), and prints it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the run's resolved config JSON")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--settings", nargs="+", required=True, help="static-k{k} | confadapt-tau{tau} | verify-k{k}")
    p.add_argument("--conventions", nargs="+", default=["project", "authors"])
    p.add_argument("--limit", type=int, default=None, help="documents (default: config eval.limit)")
    p.add_argument("--data", default=None, help="local JSONL of the task (default: config eval.data_files)")
    p.add_argument("--engine", default=None, help="graphs | eager | reference (default: config decode.engine)")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)

    from mtpsd.config import load_resolved
    from mtpsd.evaluation.conventions import compare_conventions, conventions_markdown
    from mtpsd.io import atomic_write_json, atomic_write_text

    cfg = load_resolved(args.config)
    rows = compare_conventions(cfg, args.checkpoint, args.task, args.settings, conventions=tuple(args.conventions),
                               out_dir=args.out, limit=args.limit, data_file=args.data, engine=args.engine)
    table = conventions_markdown(rows)
    out = Path(args.out)
    atomic_write_json(out / "conventions.json", {"checkpoint": args.checkpoint, "task": args.task, "rows": rows})
    atomic_write_text(out / "conventions.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
