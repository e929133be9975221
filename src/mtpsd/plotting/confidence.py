"""Figure 6: student confidence vs quality of its k-token proposal under the teacher.

Input: ``results/summary/confidence_quality_{run}.csv`` from ``mtpsd confidence-quality``
(one row per validation prefix): ``conf_mean`` / ``conf_min`` / ``conf_prod`` (the
student's top-1 probabilities over its k read-out positions) and ``teacher_nll_mean``
= -(1/k) sum_j log P_T(y'_j | prefix, y'_{<j}). Pearson r and Spearman rho are shown;
the paper's claim is that high confidence goes with low teacher loss (rho < 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from mtpsd.errors import MtpsdError
from mtpsd.plotting.style import STRATEGY_COLORS, new_figure

CONFIDENCE_COLUMNS = ("conf_mean", "conf_min", "conf_prod")


def correlation(df: pd.DataFrame, conf: str = "conf_mean", quality: str = "teacher_nll_mean") -> dict:
    """Pearson r, Spearman rho (with two-sided p-values) and n over finite rows."""
    for col in (conf, quality):
        if col not in df.columns:
            raise MtpsdError(f"confidence-quality table has no column {col!r}")
    sub = df[[conf, quality]].replace([np.inf, -np.inf], np.nan).dropna()
    if len(sub) < 3:
        raise MtpsdError(f"need >= 3 finite rows to correlate {conf} with {quality}, have {len(sub)}")
    r = stats.pearsonr(sub[conf], sub[quality])
    rho = stats.spearmanr(sub[conf], sub[quality])
    return {"n": int(len(sub)), "pearson_r": float(r.statistic), "pearson_p": float(r.pvalue),
            "spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue)}


def plot_confidence_quality(df: pd.DataFrame, conf: str = "conf_mean", title: str | None = None) -> Figure:
    """Scatter of ``conf`` (x) vs teacher NLL (y), binned means and the correlations."""
    c = correlation(df, conf)
    sub = df[[conf, "teacher_nll_mean"]].dropna()
    fig, axes = new_figure(1, width=4.6, height=3.6)
    ax = axes[0, 0]
    ax.scatter(sub[conf], sub["teacher_nll_mean"], s=9, alpha=0.45, color=STRATEGY_COLORS["static"],
               edgecolors="none", label="validation prefix")
    bins = np.quantile(sub[conf], np.linspace(0, 1, 9))
    bins = np.unique(bins)
    if len(bins) > 2:
        which = np.clip(np.digitize(sub[conf], bins[1:-1]), 0, len(bins) - 2)
        g = sub.groupby(which)
        ax.plot(g[conf].mean(), g["teacher_nll_mean"].mean(), color=STRATEGY_COLORS["confadapt"],
                marker="o", ms=4, label="mean per confidence octile")
    k = int(df["k"].iloc[0]) if "k" in df.columns and len(df) else None
    ax.set_xlabel({"conf_mean": "Student confidence (mean top-1 prob.)",
                   "conf_min": "Student confidence (min top-1 prob.)",
                   "conf_prod": "Student confidence (product of top-1 probs.)"}.get(conf, conf))
    ax.set_ylabel("Teacher NLL of the proposal (nats/token)")
    ax.set_title((title or "Confidence vs quality" + (f" (k={k})" if k else ""))
                 + f"\nPearson r={c['pearson_r']:.2f}, Spearman ρ={c['spearman_rho']:.2f} (n={c['n']})")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig
