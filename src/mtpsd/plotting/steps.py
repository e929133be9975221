"""Figures 7 and 8: accuracy and effective k over training steps, per strategy.

Rows of ``results.csv`` carry the checkpoint's training ``step`` (0 for the step-0
model, N for ``step{N}``, the last step for ``final``). One line per decoding setting
(Static k, ConfAdapt tau, self-verify), one panel per run; the step-0 model decoded
one token at a time is the dashed reference line.
"""

from __future__ import annotations

import matplotlib as mpl
import pandas as pd
from matplotlib.figure import Figure

from mtpsd.plotting.data import metric_label, primary_metric, task_rows
from mtpsd.plotting.style import STRATEGY_COLORS, new_figure, widen_flat_percent_axis

_CMAPS = {"static": "Blues", "confadapt": "Oranges", "verify": "Greens"}


def _setting_color(strategy: str, i: int, n: int) -> tuple:
    """Shade i of n inside the strategy's colour map (dark = first)."""
    cmap = mpl.colormaps[_CMAPS[strategy]]
    return cmap(0.9 - 0.55 * (i / max(n - 1, 1)))


def _label(strategy: str, param: float) -> str:
    if strategy == "confadapt":
        return f"ConfAdapt τ={param:g}"
    if strategy == "verify":
        return f"self-verify k={param:g}"
    return f"Static k={param:g}"


def plot_over_steps(results: pd.DataFrame, task: str, *, y: str) -> Figure:
    """``y`` ("value" for fig 7, "eff_k" for fig 8) against training step for ``task``."""
    rows = task_rows(results, task).dropna(subset=["step"])
    metric, _ = primary_metric(results, task)
    runs = sorted(rows["run"].unique())
    fig, axes = new_figure(len(runs), width=4.4, height=3.4, sharey=True)
    for ax, run in zip(axes[0], runs):
        sub = rows[rows["run"] == run]
        for strategy in ("static", "confadapt", "verify"):
            srows = sub[sub["strategy"] == strategy]
            params = sorted(srows["param"].unique(), reverse=strategy == "confadapt")
            for i, param in enumerate(params):
                line = srows[srows["param"] == param].sort_values("step")
                err = line["value_se"] if y == "value" else None
                ax.errorbar(line["step"], line[y], yerr=err, marker="o", ms=3, capsize=1.5, elinewidth=0.6,
                            color=_setting_color(strategy, i, len(params)), label=_label(strategy, param))
        base = sub[sub["strategy"] == "baseline_step0"]
        if not base.empty:
            ax.axhline(base[y].iloc[0], color=STRATEGY_COLORS["baseline_step0"], ls="--", lw=1,
                       label="step-0 model, k=1")
        ax.set_title(f"{run}: {task}")
        if y == "value" and metric.endswith("_pct"):
            widen_flat_percent_axis(ax)
        ax.set_xlabel("Training step")
    axes[0, 0].set_ylabel(metric_label(metric) if y == "value" else "Effective k (tokens per forward pass)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def plot_accuracy_steps(results: pd.DataFrame, task: str) -> Figure:
    """Figure 7: task metric over training steps."""
    return plot_over_steps(results, task, y="value")


def plot_acceleration_steps(results: pd.DataFrame, task: str) -> Figure:
    """Figure 8: effective k over training steps."""
    return plot_over_steps(results, task, y="eff_k")
