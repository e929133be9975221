"""Resolved configs on disk: ``results/config.json`` and ``results/runs/<run>/config.json``,
the exact config every later step reads (written by ``mtpsd resolve-config``).

The workflow refreshes them before it builds the DAG (:func:`refresh_resolved`) instead of
re-running the resolve rules on a params change: a resolve job that re-runs because its
params changed makes Snakemake (9.x) skip evaluating everything downstream of it whose input
is ``ancient()`` -- including jobs whose outputs are missing -- so an invocation after an
overlay change or an edited value would stop after the resolve jobs. The resolve rules now
only create missing files; what re-runs after an edit is decided by each rule's own section
params, as before.
"""

from __future__ import annotations

import json
from pathlib import Path

from mtpsd.io import atomic_write_json, provenance


def resolved_values(cfg) -> dict:
    """The values a resolved config file holds (JSON types), without its provenance."""
    return json.loads(json.dumps(cfg.to_dict()))


def write_resolved(path: str | Path, cfg) -> None:
    """Write ``cfg`` (a resolved ``Config``) with provenance, atomically."""
    out = resolved_values(cfg)
    out["provenance"] = provenance(seed=cfg.seed)
    atomic_write_json(path, out)


def refresh_resolved(path: str | Path, cfg) -> bool:
    """Rewrite an existing resolved config whose values differ from ``cfg``'s; a missing file
    is left to the resolve rules. True when the file was rewritten."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        old.pop("provenance", None)
    except (OSError, json.JSONDecodeError, AttributeError):
        old = None
    if old == resolved_values(cfg):
        return False
    write_resolved(path, cfg)
    return True
