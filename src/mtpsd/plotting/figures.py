"""Dispatch from a figure name to its input reader and plotting function (used by the CLI)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from mtpsd.errors import MtpsdError
from mtpsd.io import read_jsonl
from mtpsd.plotting import FIGURES
from mtpsd.plotting.data import choose_task, load_paper_results, read_results, read_train_metrics


def _need(inp: str | None, name: str) -> Path:
    if inp is None:
        raise MtpsdError(f"figure {name!r} needs --in")
    return Path(inp)


def make_figure(name: str, inp: str | None = None, *, task: str | None = None, row: int | None = None,
                checkpoint: str = "final", paper: bool = True) -> Figure:
    """Read ``inp`` as figure ``name`` expects and return the drawn Figure."""
    if name not in FIGURES and name != "ablations":
        raise MtpsdError(f"unknown figure {name!r}; choose one of {', '.join(FIGURES)}, ablations")
    if name in ("layout", "mask-offsets", "mask-k"):
        from mtpsd.plotting import layout_figs

        return {"layout": layout_figs.plot_layout, "mask-offsets": layout_figs.plot_mask_offsets,
                "mask-k": layout_figs.plot_mask_k}[name]()
    path = _need(inp, name)
    if name == "chunks":
        from mtpsd.plotting.chunks import pick_row, plot_chunks

        r = pick_row(read_jsonl(path, required=("token_strs", "chunk_sizes")), row)
        return plot_chunks(r, title=f"{path.parent.parent.name}/{path.stem}: chunks of one answer")
    if name == "confidence-quality":
        from mtpsd.plotting.confidence import plot_confidence_quality

        if not path.is_file():
            raise MtpsdError(f"{path}: file not found")
        return plot_confidence_quality(pd.read_csv(path), title=f"Confidence vs quality ({path.stem})")
    if name == "training":
        from mtpsd.plotting.training import plot_training

        return plot_training(read_train_metrics(path))
    results = read_results(path)
    task = choose_task(results, task)
    if name == "ablations":
        from mtpsd.plotting.ablations import plot_ablations

        return plot_ablations(results, task, load_paper_results() if paper else None)
    if name == "pareto":
        from mtpsd.plotting.pareto import plot_pareto

        return plot_pareto(results, task, load_paper_results() if paper else None)
    if name in ("accuracy-steps", "acceleration-steps"):
        from mtpsd.plotting.steps import plot_over_steps

        return plot_over_steps(results, task, y="value" if name == "accuracy-steps" else "eff_k")
    from mtpsd.plotting.wallclock import plot_wallclock

    return plot_wallclock(results, task, checkpoint)
