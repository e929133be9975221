"""Figure 9: wall-clock speedup against effective k, with the ideal y = x line.

speedup(setting) = tokens_per_s(setting) / tokens_per_s(Static k=1), both measured on
the same run, checkpoint and task. An effective k is a count of tokens per forward
pass; a k-token forward pass costs more than a 1-token one, so measured speedups fall
below the ideal line by that extra cost (design.md: ~2x per step with 16 extra tokens
on CPU).
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from mtpsd.errors import MtpsdError
from mtpsd.plotting.style import PALETTE, STRATEGY_COLORS, STRATEGY_LABELS, new_figure

_MARKERS = {"static": "s", "confadapt": "o", "verify": "*"}


def wallclock_speedups(results: pd.DataFrame, task: str) -> pd.DataFrame:
    """Rows of ``task`` (first metric row per setting) with a ``speedup`` column."""
    rows = results[(results["task"] == task) & results["tokens_per_s"].notna()]
    rows = rows[rows["strategy"] != "baseline_step0"]
    rows = rows.drop_duplicates(["run", "checkpoint", "setting"])
    ref = rows[(rows["strategy"] == "static") & (rows["param"] == 1)]
    ref = ref.set_index(["run", "checkpoint"])["tokens_per_s"].rename("ref_tokens_per_s")
    out = rows.join(ref, on=["run", "checkpoint"], how="inner")
    if out.empty:
        raise MtpsdError(f"no Static k=1 row with tokens_per_s for task {task!r}: cannot compute speedups")
    out["speedup"] = out["tokens_per_s"] / out["ref_tokens_per_s"]
    return out.reset_index(drop=True)


def plot_wallclock(results: pd.DataFrame, task: str, checkpoint: str = "final") -> Figure:
    """Speedup vs effective k at ``checkpoint``; colour = strategy, marker fill = run."""
    sp = wallclock_speedups(results, task)
    sp = sp[sp["checkpoint"] == checkpoint]
    fig, axes = new_figure(1, width=4.6, height=3.8)
    ax = axes[0, 0]
    runs = sorted(sp["run"].unique())
    for j, run in enumerate(runs):
        for strategy in ("static", "confadapt", "verify"):
            sub = sp[(sp["run"] == run) & (sp["strategy"] == strategy)].sort_values("eff_k")
            if sub.empty:
                continue
            ax.plot(sub["eff_k"], sub["speedup"], marker=_MARKERS[strategy], ls="-" if strategy != "verify" else "none",
                    color=STRATEGY_COLORS[strategy], mec=PALETTE[j % len(PALETTE)], mew=1.2,
                    alpha=0.9, ms=8 if strategy == "verify" else 5,
                    label=f"{run}: {STRATEGY_LABELS[strategy]}")
    hi = max(float(sp["eff_k"].max()), float(sp["speedup"].max()), 1.0) * 1.05
    ax.plot([1, hi], [1, hi], color="k", ls="--", lw=1, label="ideal: speedup = effective k")
    ax.axhline(1.0, color="0.6", lw=0.8)
    ax.set_xlim(0.8, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("Effective k (tokens per forward pass)")
    ax.set_ylabel("Wall-clock speedup vs Static k=1")
    ax.set_title(f"{task} ({checkpoint} checkpoint)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig
