"""Reading the summary CSVs that figures, tables and the report consume.

Figures read only ``results/summary/*.csv`` (and small analysis files), never
checkpoints. ``results.csv`` has the columns of the paper's reference table plus our
extras (docs/architecture.md); ``train_metrics.csv`` is long format, one row per run
and logged step. The paper's published numbers ship as package data
(``mtpsd/paper_results.csv``, the paper's reported tables as one long table).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from mtpsd.errors import MtpsdError
from mtpsd.reporting.summarize import TASK_NAMES
from mtpsd.reporting.summarize import agreement_columns as summary_agreement_columns

PAPER_COLUMNS = [
    "table", "model", "variant", "chat_template", "strategy", "param", "task", "metric",
    "value", "value_se", "eff_k", "eff_k_sd",
]
OUR_COLUMNS = PAPER_COLUMNS + [
    "run", "checkpoint", "step", "setting", "metric_variant", "tokens_per_s", "forward_passes",
    "tokens", "n_docs", "source_file",
]
NUMERIC = ["param", "value", "value_se", "eff_k", "eff_k_sd", "step", "tokens_per_s",
           "forward_passes", "tokens", "n_docs"]
STRATEGIES = ("baseline_step0", "static", "confadapt", "verify")
# Our lm-eval task names -> the paper's task names (for paper-vs-ours comparisons).
PAPER_TASKS = ("gsm8k", "cnn_dailymail", "ifeval", "bbh", "aime25", "gpqa_main")
# any task name we may meet -> the paper's name: the paper's own, upstream lm-eval tasks,
# and ours (as ``summarize`` names them when it writes the summary)
TASK_ALIASES = (
    {t: t for t in PAPER_TASKS}
    | {"gsm8k_cot": "gsm8k", "cnn_dailymail_abisee": "cnn_dailymail", "bbh_cot_fewshot": "bbh",
       "gpqa_main_cot_n_shot": "gpqa_main"}
    | {ours: name for ours, name in TASK_NAMES.items() if name in PAPER_TASKS}
)
# Preference when a (task) has several metrics: the headline metric first.
METRIC_ORDER = ("accuracy_pct", "rouge_l")
TASK_ORDER = ("gsm8k",)  # the paper's headline task first, if we evaluated it


def _read_csv(path: str | Path, required: list[str]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise MtpsdError(f"{path}: file not found")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise MtpsdError(f"{path}: not a readable CSV ({e})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise MtpsdError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


ACCOUNTING_COLUMNS = ["eff_k_project", "eff_k_authors"]  # both accountings (issue 27); NaN in older CSVs


def read_results(path: str | Path) -> pd.DataFrame:
    """``results/summary/results.csv`` restricted to our rows (``table == "ours"``)."""
    df = _read_csv(path, OUR_COLUMNS)
    for col in ACCOUNTING_COLUMNS:
        if col not in df.columns:
            df[col] = float("nan")
    for col in NUMERIC + ACCOUNTING_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df = df[df["table"] == "ours"].copy()
    bad = sorted(set(df["strategy"]) - set(STRATEGIES))
    if bad:
        raise MtpsdError(f"{path}: unknown strategy value(s) {bad}; expected {list(STRATEGIES)}")
    df["metric_variant"] = df["metric_variant"].fillna("")
    return df.reset_index(drop=True)


def read_train_metrics(path: str | Path) -> pd.DataFrame:
    """``results/summary/train_metrics.csv``; agreement columns ``agreement_j1..`` kept in order."""
    df = _read_csv(path, ["run", "step", "loss"])
    for col in df.columns:
        if col != "run":
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df.sort_values(["run", "step"]).reset_index(drop=True)


def agreement_columns(df: pd.DataFrame) -> list[str]:
    """``agreement_j1 .. agreement_jK`` present in ``df`` with any data, ordered by j."""
    return [c for c in summary_agreement_columns(df) if df[c].notna().any()]


def load_paper_results() -> pd.DataFrame:
    """The paper's published numbers (package data ``mtpsd/paper_results.csv``)."""
    ref = resources.files("mtpsd").joinpath("paper_results.csv")
    with resources.as_file(ref) as path:
        df = _read_csv(path, PAPER_COLUMNS)
    for col in ("param", "value", "value_se", "eff_k", "eff_k_sd"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def paper_task(task: str) -> str | None:
    """The paper's name for one of our task names (None if the paper has no such task)."""
    return TASK_ALIASES.get(task)


def primary_metric(df: pd.DataFrame, task: str) -> tuple[str, str]:
    """``(metric, metric_variant)`` that represents ``task``: accuracy, then ROUGE-L, then
    the first other metric; among variants prefer lm-eval's "flexible-extract"."""
    sub = df[df["task"] == task]
    if sub.empty:
        raise MtpsdError(f"task {task!r} not in results (have: {sorted(df['task'].unique())})")
    metrics = sorted(sub["metric"].unique(), key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else 99, m))
    metric = metrics[0]
    variants = sorted(sub.loc[sub["metric"] == metric, "metric_variant"].unique(),
                      key=lambda v: (0 if "flexible" in v else 1, v))
    return metric, variants[0]


def task_rows(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Rows of ``task`` for its primary metric only (one row per run x checkpoint x setting)."""
    metric, variant = primary_metric(df, task)
    sel = (df["task"] == task) & (df["metric"] == metric) & (df["metric_variant"] == variant)
    return df[sel].copy()


def choose_task(df: pd.DataFrame, task: str | None = None) -> str:
    """``task`` if given (checked), else the headline task: one the paper calls GSM8K, else
    the first accuracy task, else the first task."""
    tasks = sorted(df["task"].unique())
    if not tasks:
        raise MtpsdError("results contain no rows of ours (table == 'ours')")
    if task is not None:
        if task not in tasks:
            raise MtpsdError(f"task {task!r} not in results (have: {tasks})")
        return task
    for want in TASK_ORDER:
        for t in tasks:
            if paper_task(t) == want:
                return t
    acc = [t for t in tasks if (df.loc[df["task"] == t, "metric"] == "accuracy_pct").any()]
    return (acc or tasks)[0]


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Final-checkpoint sweeps plus the step-0 baseline (what tables and Pareto plots show)."""
    return df[(df["checkpoint"] == "final") | (df["strategy"] == "baseline_step0")].copy()


def metric_label(metric: str) -> str:
    return {"accuracy_pct": "Accuracy (%)", "rouge_l": "ROUGE-L"}.get(metric, metric)
