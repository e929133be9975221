"""One place for figure styling and saving (Agg backend, PNG + PDF side by side).

Every figure function calls :func:`use_style` before it draws, and every CLI saves
through :func:`save_figure`, which writes ``figNN_slug.png`` and the ``.pdf`` beside
it atomically (``mtpsd.io.atomic_path``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are built by Snakemake jobs, never shown

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mtpsd.io import atomic_path  # noqa: E402

# Colour-blind-safe palette (Okabe & Ito); strategies keep one colour in every figure.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
STRATEGY_COLORS = {
    "static": "#0072B2",
    "confadapt": "#D55E00",
    "verify": "#009E73",
    "baseline_step0": "#555555",
}
STRATEGY_LABELS = {
    "static": "Static k",
    "confadapt": "ConfAdapt",
    "verify": "Self-verify (lossless)",
    "baseline_step0": "Step-0 model, k=1",
}
DPI = 150

_RC = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.4,
    "lines.markersize": 5,
    "pdf.fonttype": 42,  # embed TrueType so text stays text in the PDF
}


def use_style() -> None:
    """Apply the shared rcParams (idempotent)."""
    plt.rcParams.update(_RC)


def widen_flat_percent_axis(ax, min_span: float = 10.0) -> bool:
    """Give a percent y-axis at least ``min_span`` points when its data barely vary.

    Without it matplotlib zooms into rounding noise: an all-zero accuracy (a small model
    on GSM8K) gets a ``1e-17``-scaled axis. Returns whether it widened the axis.
    """
    lo, hi = ax.dataLim.intervaly
    if not (lo <= hi) or hi - lo >= min_span:
        return False
    bottom = max(min(lo, 0.0) - 1.0, (lo + hi - min_span) / 2)
    ax.set_ylim(bottom, bottom + min_span)
    return True


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.2, height: float = 3.2, **kw):
    """``(fig, axes)`` sized ``width x height`` inches per panel, styled."""
    use_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)
    return fig, axes


def save_figure(fig: Figure, out: str | Path) -> list[Path]:
    """Write ``out`` (a .png) and the .pdf beside it; close the figure; return both paths."""
    out = Path(out)
    paths = [out.with_suffix(".png"), out.with_suffix(".pdf")]
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:])
    plt.close(fig)
    return paths
