"""Result tables: every strategy x task with standard errors, and paper vs ours.

Both tables are built as DataFrames of display strings from ``results/summary/results.csv``
(final checkpoints plus the step-0 baseline; each task's primary metric) and written as
Markdown and LaTeX (``paper/generated/table01_strategies.{md,tex}``,
``table02_paper_vs_ours.{md,tex}``). A cell reads ``value ± se`` and ``eff_k ± sd``
exactly as the CSV holds them (no number is recomputed here). Paper vs ours also gives our
effective k in the authors' accounting (``eff_k_authors``, issue 27), the way the paper's
effective k was counted.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mtpsd.io import atomic_write_text
from mtpsd.plotting.data import final_rows, paper_task, primary_metric, task_rows

STRATEGY_ORDER = {"baseline_step0": 0, "static": 1, "confadapt": 2, "verify": 3}
PAPER_MODELS = ("L3.1-8B-Magpie", "Qwen3-4B-Inst-2507")
AUTHORS_EFF_K = "ours eff. k (authors' accounting)"
PAPER_EFF_K_NOTE = ("The paper's effective k was counted by the authors' decoding code (tokens until an end id "
                    "or the budget, over forward passes; stop strings only cut the text afterwards): compare it "
                    f"with \"{AUTHORS_EFF_K}\"; \"ours eff. k\" is counted by the run's convention "
                    "(decode.convention).")


def _fmt(v, se=None, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    s = f"{v:.{digits}f}"
    if se is not None and not (isinstance(se, float) and math.isnan(se)):
        s += f" ± {se:.{digits}f}"
    return s


def _digits(metric: str) -> int:
    return 1 if metric == "accuracy_pct" else 3


def setting_label(strategy: str, param: float) -> str:
    return {"baseline_step0": "step-0, k=1", "static": f"Static k={param:g}",
            "confadapt": f"ConfAdapt τ={param:g}", "verify": f"Verify k={param:g}"}[strategy]


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    order = df["strategy"].map(STRATEGY_ORDER)
    # static ascending k; confadapt descending tau (slow to fast, as the paper prints it)
    key = df["param"].where(df["strategy"] != "confadapt", -df["param"])
    return df.assign(_o=order, _k=key).sort_values(["run", "_o", "_k"]).drop(columns=["_o", "_k"])


def strategies_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per run x decoding setting; per task the metric ± SE and effective k ± sd."""
    rows: dict[tuple, dict] = {}
    tasks = sorted(results["task"].unique())
    for task in tasks:
        metric, variant = primary_metric(results, task)
        d = _digits(metric)
        for _, r in final_rows(task_rows(results, task)).iterrows():
            key = (r["run"], r["strategy"], r["param"])
            row = rows.setdefault(key, {"run": r["run"], "strategy": r["strategy"], "param": r["param"]})
            name = f"{task} [{metric}{', ' + variant if variant else ''}]"
            row[name] = _fmt(r["value"], r["value_se"], d)
            row[f"{task} eff. k"] = _fmt(r["eff_k"], r["eff_k_sd"], 2)
    df = _sort(pd.DataFrame(list(rows.values())))
    df.insert(1, "setting", [setting_label(s, p) for s, p in zip(df["strategy"], df["param"])])
    return df.drop(columns=["strategy", "param"]).fillna("–").reset_index(drop=True)


def paper_vs_ours(results: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Settings (strategy, param, paper task) that both we and the paper's main models have.

    A run whose ``model`` is a paper model (``model.paper_model``: the published checkpoints
    and the paper profile's runs) shows only that model's numbers beside its own."""
    ref = paper[paper["variant"] == "main"]
    out = []
    for task in sorted(results["task"].unique()):
        ptask = paper_task(task)
        if ptask is None:
            continue
        metric, _ = primary_metric(results, task)
        d = _digits(metric)
        for _, r in _sort(final_rows(task_rows(results, task))).iterrows():
            match = ref[(ref["task"] == ptask) & (ref["strategy"] == r["strategy"])
                        & (ref["param"].round(4) == round(float(r["param"]), 4))]
            if match.empty:
                continue
            row = {"task": f"{task} ({ptask})", "setting": setting_label(r["strategy"], r["param"]),
                   "run": r["run"], "ours": _fmt(r["value"], r["value_se"], d),
                   "ours eff. k": _fmt(r["eff_k"], None, 2),
                   AUTHORS_EFF_K: _fmt(r.get("eff_k_authors"), None, 2)}
            for model in PAPER_MODELS:
                # a run of one paper model (results `model` = its paper name) sits beside that model only
                m = match[match["model"] == model] if r["model"] not in PAPER_MODELS or r["model"] == model \
                    else match.iloc[:0]
                pd_ = 1 if ptask != "cnn_dailymail" else 3
                row[model] = _fmt(m["value"].iloc[0], m["value_se"].iloc[0], pd_) if len(m) else "–"
                row[f"{model} eff. k"] = _fmt(m["eff_k"].iloc[0], None, 1) if len(m) else "–"
            out.append(row)
    return pd.DataFrame(out).fillna("–")


def to_markdown(df: pd.DataFrame, empty_note: str = "No rows.") -> str:
    if df.empty:
        return f"_{empty_note}_\n"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in r.tolist()) + " |")
    return "\n".join(lines) + "\n"


_TEX_ESCAPE = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "±": r"$\pm$", "τ": r"$\tau$",
               "–": "--", "$": r"\$"}


def _tex(s: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(s))


def to_latex(df: pd.DataFrame, caption: str, label: str, empty_note: str = "No rows.") -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    if df.empty:
        return f"% {label}: {empty_note}\n"
    spec = "l" * 2 + "r" * (len(df.columns) - 2)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{_tex(caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_tex(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(v) for v in r.tolist()) + r" \\" for _, r in df.iterrows()]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_tables(results: pd.DataFrame, paper: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write table01 and table02 (.md and .tex) under ``out_dir``; return the paths."""
    out_dir = Path(out_dir)
    t1 = strategies_table(results)
    t2 = paper_vs_ours(results, paper)
    note2 = ("None of our tasks is one the paper evaluated (tasks: "
             + ", ".join(sorted(results["task"].unique())) + ").")
    files = {
        "table01_strategies.md": to_markdown(t1),
        "table01_strategies.tex": to_latex(t1, "Every decoding strategy and task: metric ± standard error, "
                                           "effective k ± spread (final checkpoint; step-0 model at k=1).",
                                           "tab:strategies"),
        "table02_paper_vs_ours.md": to_markdown(t2, note2) + ("" if t2.empty else f"\n{PAPER_EFF_K_NOTE}\n"),
        "table02_paper_vs_ours.tex": to_latex(t2, "Paper vs ours for the settings both evaluated. "
                                              + PAPER_EFF_K_NOTE.replace('"', "''"),
                                              "tab:paper-vs-ours", note2),
    }
    paths = []
    for name, text in files.items():
        atomic_write_text(out_dir / name, text)
        paths.append(out_dir / name)
    return paths
