"""Validate config and write one run's resolved config (the exact input of later steps).

Example::

    mtpsd resolve-config --config config/config.yaml --run tiny --out results/runs/tiny/config.json
    mtpsd resolve-config --json '{...snakemake config...}' --out results/config.json
"""

from __future__ import annotations

import json

from mtpsd.config import merge_sources, resolve
from mtpsd.config.resolved import write_resolved


def add_arguments(p) -> None:
    p.add_argument("--config", action="append", default=[], help="YAML file; repeat to overlay")
    p.add_argument("--json", help="merged config as a JSON string (what Snakemake passes)")
    p.add_argument("--run", help="named run whose overrides to apply (omit for the global config)")
    p.add_argument("--out", required=True, help="resolved config JSON to write ('-': print it)")


def run(args) -> int:
    raw = merge_sources(args.config, args.json)
    cfg = resolve(raw, args.run)
    out = cfg.to_dict()
    if args.out == "-":
        print(json.dumps(out, indent=2))
        return 0
    write_resolved(args.out, cfg)
    print(f"resolved config{' for run ' + args.run if args.run else ''} -> {args.out}")
    return 0
