"""Figure 5: accuracy vs acceleration factor (effective k), Static and ConfAdapt (Pareto).

Left panel, ours (one colour per run): Static-k points joined in k order, the
ConfAdapt curve joined in decreasing tau, the lossless self-verify point, the step-0
model at k=1 (dashed line), error bars ``value_se`` (vertical) and ``eff_k_sd``
(horizontal), and each run's Pareto frontier (points no other point beats on both
accuracy and effective k). Where a run recorded effective k in both accountings (issue 27)
and the other one differs, a hollow marker of the same colour sits at the other accounting's
effective k, joined to its point by a thin line: the authors' accounting (the paper's way of
counting) for a run of the project's convention, the project's for a run of the authors'.
Right panel: the paper's GSM8K points for L3.1-8B-Magpie and Qwen3-4B-Inst-2507 (method.md
section 7) on the same axes style.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mtpsd.plotting.data import final_rows, metric_label, primary_metric, task_rows
from mtpsd.plotting.style import PALETTE, STRATEGY_LABELS, new_figure, widen_flat_percent_axis

PAPER_MODELS = ("L3.1-8B-Magpie", "Qwen3-4B-Inst-2507")
_MARKERS = {"static": "s", "confadapt": "o", "verify": "*", "baseline_step0": "D"}


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (maximise both x and y), sorted by x.

    Point i is dominated if some j has x_j >= x_i and y_j >= y_i with one strict.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = []
    for i in range(len(x)):
        dom = (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        if not dom.any():
            keep.append(i)
    return np.array(sorted(keep, key=lambda i: x[i]), dtype=int)


def _light_xerr(ax) -> None:
    """Fade the horizontal bars of the last errorbar: eff_k_sd is a spread, not an error."""
    container = ax.containers[-1]
    if container.has_xerr:
        container.lines[2][0].set_alpha(0.25)  # barlinecols: (x bars, y bars)


def other_accounting(rows: pd.DataFrame) -> pd.Series:
    """Per row, effective k in the accounting the row's ``eff_k`` is not (NaN where not recorded
    or equal to ``eff_k`` within 0.005): the authors' for the project's convention, and back."""
    if "eff_k_authors" not in rows or "eff_k_project" not in rows:
        return pd.Series(np.nan, index=rows.index)
    authors = rows.get("convention", pd.Series("project", index=rows.index)).fillna("project") == "authors"
    other = rows["eff_k_project"].where(authors, rows["eff_k_authors"]).astype(float)
    return other.where((other - rows["eff_k"].astype(float)).abs() > 0.005)


def _draw_other_accounting(ax, rows: pd.DataFrame, color: str) -> bool:
    """Hollow markers at the other accounting's effective k; True if any was drawn."""
    other = other_accounting(rows)
    keep = other.notna() & rows["value"].notna()
    for (_, r), x in zip(rows[keep].iterrows(), other[keep]):
        ax.plot([r["eff_k"], x], [r["value"], r["value"]], color=color, lw=0.6, alpha=0.5)
        ax.plot([x], [r["value"]], marker=_MARKERS.get(r["strategy"], "o"), color=color, mfc="white", ms=4,
                ls="none")
    return bool(keep.any())


def _legend(ax, names: list[str], colors: list[str], strategies: set[str], loc: str,
            other: str | None = None) -> None:
    """One entry per model (colour) and one per strategy (marker and line style); ``other``: the
    label of the hollow markers of the other accounting, if drawn."""
    handles = [Line2D([], [], color=c, lw=2, label=n) for n, c in zip(names, colors)]
    for strategy, ls in (("static", "-"), ("confadapt", "--"), ("verify", "none"), ("baseline_step0", ":")):
        if strategy in strategies:
            handles.append(Line2D([], [], color="k", marker=_MARKERS[strategy], ls=ls,
                                  mfc="white" if strategy == "baseline_step0" else "k",
                                  ms=8 if strategy == "verify" else 4, label=STRATEGY_LABELS[strategy]))
    handles.append(Line2D([], [], color="k", lw=5, alpha=0.15, label="Pareto frontier"))
    if other:
        handles.append(Line2D([], [], color="k", marker="o", mfc="white", ms=4, ls="none", label=other))
    ax.legend(handles=handles, loc=loc)


def _draw_model(ax, rows: pd.DataFrame, color: str, *, frontier: bool = True) -> None:
    """Static / ConfAdapt / verify / baseline points of one model or run."""
    for strategy, order, ls in (("static", "param", "-"), ("confadapt", "param", "--")):
        sub = rows[rows["strategy"] == strategy].sort_values(order, ascending=strategy == "static")
        if sub.empty:
            continue
        ax.errorbar(sub["eff_k"], sub["value"], yerr=sub["value_se"].fillna(0), xerr=sub["eff_k_sd"].fillna(0),
                    color=color, marker=_MARKERS[strategy], ls=ls, ms=4, capsize=1.5, elinewidth=0.6,
                    alpha=0.9)
        _light_xerr(ax)
        if strategy == "confadapt":
            for _, r in sub.iterrows():
                if np.isclose(r["param"], 0.9):
                    ax.annotate("τ=0.9", (r["eff_k"], r["value"]), textcoords="offset points",
                                xytext=(4, 4), fontsize=6.5, color=color)
    ver = rows[rows["strategy"] == "verify"]
    if not ver.empty:
        ax.errorbar(ver["eff_k"], ver["value"], yerr=ver["value_se"].fillna(0), xerr=ver["eff_k_sd"].fillna(0),
                    color=color, marker="*", ms=9, ls="none", capsize=1.5, elinewidth=0.6)
        _light_xerr(ax)
    base = rows[rows["strategy"] == "baseline_step0"]
    if not base.empty:
        ax.axhline(base["value"].iloc[0], color=color, ls=":", lw=1.0, alpha=0.8)
        ax.plot(base["eff_k"], base["value"], marker="D", color=color, ms=4, ls="none",
                mfc="white")
    pts = rows[rows["strategy"] != "baseline_step0"].dropna(subset=["eff_k", "value"])
    if frontier and len(pts) > 1:
        idx = pareto_front(pts["eff_k"].to_numpy(), pts["value"].to_numpy())
        ax.plot(pts["eff_k"].to_numpy()[idx], pts["value"].to_numpy()[idx], color=color, lw=5,
                alpha=0.15, solid_capstyle="round", zorder=0)


def plot_pareto(results: pd.DataFrame, task: str, paper: pd.DataFrame | None = None) -> Figure:
    """Accuracy vs effective k for ``task`` (ours) and the paper's GSM8K points.

    results: our rows (``read_results``); paper: ``load_paper_results()`` or None for
    a single panel. Returns a Figure with one or two panels.
    """
    rows = final_rows(task_rows(results, task))
    metric, variant = primary_metric(results, task)
    ncols = 2 if paper is not None else 1
    fig, axes = new_figure(ncols, width=4.6, height=3.6)
    ax = axes[0, 0]
    runs = sorted(rows["run"].unique())
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(runs))]
    drew_other = False
    for run, color in zip(runs, colors):
        _draw_model(ax, rows[rows["run"] == run], color)
        drew_other |= _draw_other_accounting(ax, rows[rows["run"] == run], color)
    conventions = set(rows.get("convention", pd.Series(dtype=object)).dropna())
    other = None
    if drew_other:
        other = ("hollow: the project's accounting" if conventions == {"authors"}
                 else "hollow: the authors' accounting (the paper's)" if conventions <= {"project"}
                 else "hollow: the other accounting")
    ax.set_xlabel("Effective k (tokens per forward pass)")
    ax.set_ylabel(metric_label(metric) + (f" [{variant}]" if variant else ""))
    ax.set_title(f"Ours: {task}")
    flat = metric.endswith("_pct") and widen_flat_percent_axis(ax)
    _legend(ax, runs, colors, set(rows["strategy"]), "upper right" if flat else "lower left", other)
    if paper is not None:
        ax2 = axes[0, 1]
        ref = paper[(paper["task"] == "gsm8k") & (paper["variant"] == "main")]
        pcolors = [PALETTE[(i + 4) % len(PALETTE)] for i in range(len(PAPER_MODELS))]
        for model, color in zip(PAPER_MODELS, pcolors):
            _draw_model(ax2, ref[ref["model"] == model], color)
        ax2.set_xlabel("Effective k (tokens per forward pass)")
        ax2.set_ylabel(metric_label("accuracy_pct"))
        ax2.set_title("Paper (Kirchenbauer et al., 2026): GSM8K")
        _legend(ax2, list(PAPER_MODELS), pcolors, set(ref["strategy"]), "lower left")
    fig.tight_layout()
    return fig


