"""Figure 10: training curves: distillation loss and per-position teacher agreement.

agreement_j = fraction of regions where the teacher's hard target t_j equals the
student's argmax y'_j at read-out position j (method.md section 4); j = 1 is the
ordinary next token, so it starts near 1 and the later positions rise with training.
"""

from __future__ import annotations

import matplotlib as mpl
import pandas as pd
from matplotlib.figure import Figure

from mtpsd.plotting.data import agreement_columns
from mtpsd.plotting.style import PALETTE, new_figure

_LINESTYLES = ["-", "--", ":", "-."]


def plot_training(metrics: pd.DataFrame) -> Figure:
    """Loss per run (left) and agreement_j per position j (right, colour = j, style = run)."""
    fig, axes = new_figure(2, width=4.4, height=3.3)
    ax_loss, ax_agr = axes[0]
    runs = sorted(metrics["run"].unique())
    for i, run in enumerate(runs):
        sub = metrics[metrics["run"] == run]
        ax_loss.plot(sub["step"], sub["loss"], color=PALETTE[i % len(PALETTE)], label=run)
    ax_loss.set_xlabel("Training step")
    ax_loss.set_ylabel("Distillation loss (cross-entropy)")
    ax_loss.set_title("Loss")
    ax_loss.legend()
    cols = agreement_columns(metrics)
    cmap = mpl.colormaps["viridis"]
    for i, run in enumerate(runs):
        sub = metrics[metrics["run"] == run]
        for n, col in enumerate(cols):
            if sub[col].notna().any():
                ax_agr.plot(sub["step"], sub[col], color=cmap(n / max(len(cols) - 1, 1)),
                            ls=_LINESTYLES[i % len(_LINESTYLES)], lw=1.1,
                            label=f"j={col[11:]}" if i == 0 else None)
    for i, run in enumerate(runs):
        ax_agr.plot([], [], color="0.3", ls=_LINESTYLES[i % len(_LINESTYLES)], label=run)
    ax_agr.set_ylim(0, 1.02)
    ax_agr.set_xlabel("Training step")
    ax_agr.set_ylabel("Teacher agreement at position j")
    ax_agr.set_title("Per-position agreement")
    ax_agr.legend(ncol=2, loc="lower right")
    fig.tight_layout()
    return fig
