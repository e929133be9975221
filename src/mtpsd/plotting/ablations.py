"""Figure 11 (ablation overlay only): accuracy vs effective k, one curve per ablation.

Left panel, ours: every ablation group (``mtpsd.reporting.ablation_report.ablation_groups``), one
colour per ablation (the reference in black): the ConfAdapt curve (dashed, in decreasing
tau) starting from Static k=1, the Static k points (solid, in k order), error bars
``value_se``; the step-0 model as a dotted line. Right panel: the paper's L3.1-8B-Magpie
GSM8K rows of the same ablations (its ablation tables, reference: ``main``).
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mtpsd.reporting.ablation_report import PAPER_MODEL, ablation_groups, paper_sweep, sweep
from mtpsd.ablations import LABELS, PAPER_VARIANT, REFERENCE
from mtpsd.errors import MtpsdError
from mtpsd.plotting.data import final_rows, metric_label, primary_metric, task_rows
from mtpsd.plotting.style import PALETTE, new_figure

ORDER = (REFERENCE, "gt", "soft", "bda", "static_k", "prefix", "magpie")
COLORS = {name: ("#000000" if name == REFERENCE else PALETTE[i % (len(PALETTE) - 1)])
          for i, name in enumerate(ORDER)}


def _draw(ax, sw: pd.DataFrame, color: str) -> None:
    k1 = sw[(sw["strategy"] == "static") & (sw["param"] == 1)]
    ca = pd.concat([k1, sw[sw["strategy"] == "confadapt"].sort_values("param", ascending=False)])
    st = sw[sw["strategy"] == "static"].sort_values("param")
    for sub, ls, marker in ((ca, "--", "o"), (st, "-", "s")):
        sub = sub.dropna(subset=["eff_k", "value"])
        if len(sub):
            ax.errorbar(sub["eff_k"], sub["value"], yerr=sub["value_se"].fillna(0), color=color, ls=ls,
                        marker=marker, ms=3.5, lw=1.1, capsize=1.5, elinewidth=0.6, alpha=0.9)
    base = sw[sw["strategy"] == "baseline_step0"]
    if not base.empty:
        ax.axhline(base["value"].iloc[0], color=color, ls=":", lw=0.8, alpha=0.6)


def _legend(fig: Figure, names: list[str]) -> None:
    """One legend for both panels, in a column right of them."""
    handles = [Line2D([], [], color=COLORS.get(n, "#888888"), lw=2, label=LABELS.get(n, n)) for n in names]
    handles += [Line2D([], [], color="k", ls="--", marker="o", ms=3.5, label="ConfAdapt (from k=1)"),
                Line2D([], [], color="k", ls="-", marker="s", ms=3.5, label="Static k"),
                Line2D([], [], color="k", ls=":", label="step 0, k=1")]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)


def plot_ablations(results: pd.DataFrame, task: str, paper: pd.DataFrame | None = None) -> Figure:
    """Accuracy vs effective k per ablation for ``task`` (ours) and the paper's GSM8K ablations."""
    groups = ablation_groups(results)
    if not groups:
        raise MtpsdError("results have no ablation run with a reference run trained alike "
                         "(columns ablation/ablation_key; run the config/ablations.yaml overlay)")
    rows = final_rows(task_rows(results, task))
    metric, variant = primary_metric(results, task)
    ncols = 2 if paper is not None else 1
    fig, axes = new_figure(ncols, width=4.6, height=3.8)
    fig.set_figwidth(4.6 * ncols + 1.9)  # room for the legend column
    ax = axes[0, 0]
    names = []
    for group in groups:
        for name, run in [(REFERENCE, group["reference"]), *group["ablations"].items()]:
            _draw(ax, sweep(rows[rows["run"] == run]), COLORS.get(name, "#888888"))
            names.append(name)
    names = sorted(set(names), key=lambda n: ORDER.index(n) if n in ORDER else 99)
    ax.set_xlabel("Effective k (tokens per forward pass)")
    ax.set_ylabel(metric_label(metric) + (f" [{variant}]" if variant else ""))
    ax.set_title(f"Ours: {task}, reference `{groups[0]['reference']}`")
    low, high = ax.get_ylim()
    if high - low < 1:  # all-equal accuracies (e.g. a few-step run): no 1e-17 axis
        ax.set_ylim(min(low, 0) - 2, max(high, 0) + 10)
    if paper is not None:
        ax2 = axes[0, 1]
        shown = []
        for name in ORDER:
            sw = paper_sweep(paper, PAPER_VARIANT[name], "gsm8k")
            if not sw.empty:
                _draw(ax2, sw, COLORS[name])
                shown.append(name)
        ax2.set_xlabel("Effective k (tokens per forward pass)")
        ax2.set_ylabel(metric_label("accuracy_pct"))
        ax2.set_title(f"Paper: {PAPER_MODEL}, GSM8K ablations")
        names = sorted(set(names) | set(shown), key=lambda n: ORDER.index(n) if n in ORDER else 99)
    _legend(fig, names)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / fig.get_figwidth(), 1))
    return fig
