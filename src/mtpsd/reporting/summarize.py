"""Collect evaluation JSONs and training metrics into tidy CSVs (figures read only these).

``results.csv``: one row per (evaluation file, metric). The first columns are exactly
those of ``mtpsd/paper_results.csv`` (the paper's reported tables) (:data:`PAPER_COLUMNS`); ours have
``table="ours"``, ``model`` the paper's model name where the run's config names one
(``model.paper_model``: the published checkpoints, config/paper.yaml's runs) else our
``model.name``, ``strategy="baseline_step0"`` for the step-0 checkpoint decoded at
k=1, ``param`` = k (static, verify) or tau (confadapt), accuracies in percent (the
paper's ``accuracy_pct``) and ROUGE as a fraction, ``value_se`` in the same units, and
``eff_k``/``eff_k_sd`` the measured tokens per forward pass (method.md s. 6). Extra
columns follow (:data:`EXTRA_COLUMNS`); ``ablation`` and ``ablation_key`` say which of the
paper's ablations the run's config is and which reference it is compared with
(``mtpsd.ablations``; empty for results without a config); ``convention`` the decoding
conventions the run reported (``decode.convention``) and ``eff_k_project`` / ``eff_k_authors``
effective k in the project's and in the authors' accounting (issue 27; ``eff_k`` is the one of
``convention``; empty for results from before both were recorded). Task and metric names are the paper's
(:data:`TASK_NAMES`, :data:`METRICS`): GSM8K and GPQA flexible-extract, AIME25 exact
match, BBH get-answer exact match and IFEval prompt-level strict accuracy are each
``accuracy_pct``, as in ``paper_results.csv``.

``speed.csv``: the decode rule's batch-1 wall-clock runs (a fixed subset of test prompts,
``decode.speed_prompts``, in ``model.dtype``), same columns, task ``batch1_speed``; the
wall-clock figure reads it, so accuracy runs can decode in batches.

``train_metrics.csv``: all runs' ``train_metrics.jsonl`` rows with a ``run`` column;
the per-position ``agreement`` list becomes ``agreement_j1 .. agreement_jK``.

    from mtpsd.reporting.summarize import summarize_evals, join_paper
    ours = summarize_evals(["results/runs/tiny/eval/mtpsd_synth_math/final/static-k1.json"])
    both = join_paper(ours, pd.read_csv("src/mtpsd/paper_results.csv"))
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mtpsd.ablations import ablation_key, ablation_of
from mtpsd.errors import MtpsdError
from mtpsd.io import read_json, read_jsonl

PAPER_COLUMNS = ["table", "model", "variant", "chat_template", "strategy", "param", "task", "metric",
                 "value", "value_se", "eff_k", "eff_k_sd"]
EXTRA_COLUMNS = ["run", "checkpoint", "step", "setting", "metric_variant", "tokens_per_s",
                 "forward_passes", "tokens", "n_docs", "source_file", "ablation", "ablation_key",
                 "convention", "eff_k_project", "eff_k_authors"]
RESULT_COLUMNS = PAPER_COLUMNS + EXTRA_COLUMNS

# our task -> the paper's task name
TASK_NAMES = {"mtpsd_gsm8k_cot": "gsm8k", "mtpsd_cnn_dailymail": "cnn_dailymail",
              "mtpsd_synth_math": "synth_math", "mtpsd_creative_writing": "creative_writing",
              "aime25": "aime25", "gpqa_main_cot_n_shot": "gpqa_main", "bbh_cot_fewshot": "bbh",
              "ifeval": "ifeval"}
# lm-eval "metric,filter" key -> (our metric name, scale to the paper's units)
METRICS = {
    "exact_match,flexible-extract": ("accuracy_pct", 100.0),
    "exact_match,strict-match": ("accuracy_strict_pct", 100.0),
    # the paper's general evaluations (lm-eval's own tasks): the metric the paper reports
    # becomes accuracy_pct, as in paper_results.csv
    "exact_match,none": ("accuracy_pct", 100.0),                # aime25: exact match
    "exact_match,get-answer": ("accuracy_pct", 100.0),          # bbh_cot_fewshot (group mean)
    "prompt_level_strict_acc,none": ("accuracy_pct", 100.0),    # ifeval: prompt-level (strict)
    "prompt_level_loose_acc,none": ("accuracy_loose_pct", 100.0),
    "inst_level_strict_acc,none": ("inst_accuracy_pct", 100.0),
    "inst_level_loose_acc,none": ("inst_accuracy_loose_pct", 100.0),
    "rouge_l,none": ("rouge_l", 1.0),
    "rouge_1,none": ("rouge_1", 1.0),
    "rouge_2,none": ("rouge_2", 1.0),
    "distinct_1,none": ("distinct_1", 1.0),
    "distinct_2,none": ("distinct_2", 1.0),
    "distinct_3,none": ("distinct_3", 1.0),
    "rep_4,none": ("rep_4", 1.0),
    "length_words,none": ("length_words", 1.0),
    "ppl_base,none": ("ppl_base", 1.0),
    "rouge_l_vs_k1,none": ("rouge_l_vs_k1", 1.0),
}


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _step(ckpt: str, result: dict) -> float:
    if ckpt == "step0":
        return 0.0
    if ckpt.startswith("step") and ckpt[4:].isdigit():
        return float(ckpt[4:])
    if ckpt == "final":
        cfg = result.get("provenance", {}).get("config") or {}
        return _num((cfg.get("train") or {}).get("steps"))
    return math.nan


def _read(path, rule: str, reader):
    """``reader(path)``; a file that cannot be read (a damaged or truncated result) stops the
    summary with one line naming the file and the workflow rule that writes it again."""
    try:
        return reader(path)
    except MtpsdError as e:
        raise MtpsdError(f"{e}. This result is damaged or incomplete; the workflow's rule `{rule}` writes it: "
                         f"delete it (`rm {path}`) and run the same snakemake or make command again") from None


def eval_rows(result: dict, source_file: str = "") -> list[dict]:
    """The tidy rows (one per known metric) of one ``mtpsd evaluate`` result dict."""
    if not isinstance(result, dict):
        raise MtpsdError(f"{source_file or 'result'}: expected a JSON object, got {type(result).__name__}")
    for key in ("task", "strategy", "param", "setting", "ckpt", "results"):
        if key not in result:
            raise MtpsdError(f"{source_file or 'result'}: missing key '{key}' (not an mtpsd evaluate file?)")
    task = result["task"]
    metrics = result["results"].get(task)
    if metrics is None:
        raise MtpsdError(f"{source_file}: results has no entry for task '{task}'")
    stats = result.get("decode_stats") or {}
    ckpt = result["ckpt"]
    is_baseline = ckpt == "step0" and result["strategy"] == "static" and int(result["param"]) == 1
    # the paper's name of the model when the run reproduces one (model.paper_model), so our
    # rows share the `model` column with the paper's; else our model.name
    run_cfg = (result.get("provenance") or {}).get("config") or {}
    paper_model = (run_cfg.get("model") or {}).get("paper_model")
    base = {
        "table": "ours", "model": paper_model or result.get("model"), "variant": result.get("run"),
        "chat_template": "on" if result.get("chat_template") else "off",
        "strategy": "baseline_step0" if is_baseline else result["strategy"],
        "param": _num(result["param"]), "task": TASK_NAMES.get(task, task),
        "eff_k": _num(stats.get("eff_k_mean")), "eff_k_sd": _num(stats.get("eff_k_sd")),
        "run": result.get("run"), "checkpoint": ckpt, "step": _step(ckpt, result),
        "setting": result["setting"], "tokens_per_s": _num(stats.get("tokens_per_s")),
        "forward_passes": _num(stats.get("forward_passes")), "tokens": _num(stats.get("tokens")),
        "n_docs": _num(result.get("n_docs")), "source_file": source_file,
        "ablation": ablation_of(run_cfg) if run_cfg else None,
        "ablation_key": ablation_key(run_cfg) if run_cfg else None,
        **accounting_columns(result.get("convention"), stats),
    }
    rows = []
    for key, (name, scale) in METRICS.items():
        if key not in metrics:
            continue
        metric, filt = key.split(",", 1)
        se = metrics.get(f"{metric}_stderr,{filt}")
        rows.append({**base, "metric": name, "value": _num(metrics[key]) * scale,
                     "value_se": _num(se) * scale, "metric_variant": key})
    return rows


def accounting_columns(convention: str | None, stats: dict) -> dict:
    """``convention``, ``eff_k_project``, ``eff_k_authors`` of a result (NaN where not recorded)."""
    return {"convention": convention or stats.get("convention"), "eff_k_project": _num(stats.get("eff_k_project")),
            "eff_k_authors": _num(stats.get("eff_k_authors"))}


SPEED_TASK = "batch1_speed"  # task name of the decode rule's rows in speed.csv


def speed_row(summary: dict, source_file: str) -> dict:
    """One ``speed.csv`` row from a decode summary
    (``results/runs/{run}/decode/{setting}.summary.json``: the batch-1 speed run)."""
    if not isinstance(summary, dict):
        raise MtpsdError(f"{source_file}: expected a JSON object, got {type(summary).__name__}")
    for key in ("strategy", "k", "tokens_per_s", "eff_k_mean"):
        if key not in summary:
            raise MtpsdError(f"{source_file}: missing key '{key}' (not an mtpsd decode summary?)")
    path = Path(source_file)
    setting = path.name.removesuffix(".summary.json")
    strategy = summary["strategy"]
    param = summary["tau"] if strategy == "confadapt" else summary["k"]
    dtype = str((summary.get("provenance") or {}).get("dtype", "")).removeprefix("torch.")
    return {"table": "ours", "model": None, "variant": path.parent.parent.name,
            "chat_template": "on" if summary.get("chat_template") else "off", "strategy": strategy,
            "param": _num(param), "task": SPEED_TASK, "metric": "tokens_per_s",
            "value": _num(summary["tokens_per_s"]), "value_se": math.nan,
            "eff_k": _num(summary["eff_k_mean"]), "eff_k_sd": _num(summary.get("eff_k_sd")),
            "run": path.parent.parent.name, "checkpoint": "final", "step": math.nan, "setting": setting,
            "metric_variant": f"dtype={dtype}" if dtype else "", "tokens_per_s": _num(summary["tokens_per_s"]),
            "forward_passes": _num(summary.get("forward_passes")), "tokens": _num(summary.get("tokens")),
            "n_docs": _num(summary.get("n_generations")), "source_file": source_file,
            **accounting_columns(summary.get("convention"), summary)}


def summarize_speed(paths: list[str | Path]) -> pd.DataFrame:
    """``speed.csv``: the decode rule's batch-1 wall-clock runs (what figure 9 plots), one
    row per run x setting, in :data:`RESULT_COLUMNS` (``metric`` = ``tokens_per_s``)."""
    rows = [_read(p, "decode", lambda p: speed_row(read_json(p), str(p))) for p in paths]
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return df.sort_values(["run", "strategy", "param"], kind="stable").reset_index(drop=True)


def summarize_evals(paths: list[str | Path]) -> pd.DataFrame:
    """``results.csv`` as a DataFrame, columns :data:`RESULT_COLUMNS`, sorted for reading."""
    rows = []
    for p in paths:
        rows += _read(p, "evaluate", lambda p: eval_rows(read_json(p), str(p)))
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return df.sort_values(["run", "task", "checkpoint", "strategy", "param", "metric"],
                          kind="stable").reset_index(drop=True)



AGREEMENT_PREFIX = "agreement_j"


def agreement_column(j: int) -> str:
    """Column of train_metrics.csv holding the teacher agreement at read-out position j."""
    return f"{AGREEMENT_PREFIX}{j}"


def agreement_columns(df: pd.DataFrame) -> list[str]:
    """The ``agreement_j1 .. agreement_jK`` columns of ``df``, ordered by j."""
    n = len(AGREEMENT_PREFIX)
    cols = [c for c in df.columns if c.startswith(AGREEMENT_PREFIX) and c[n:].isdigit()]
    return sorted(cols, key=lambda c: int(c[n:]))

def summarize_train_metrics(paths: list[str | Path]) -> pd.DataFrame:
    """All runs' training metrics, one row per logged step; ``run`` = the run folder name."""
    frames = []
    for p in paths:
        p = Path(p)
        rows = _read(p, "train_mtp", lambda p: read_jsonl(p, required=("step",)))
        run = p.parent.name
        flat = []
        for r in rows:
            r = dict(r)
            agreement = r.pop("agreement", None)
            if isinstance(agreement, list):
                for j, a in enumerate(agreement, 1):
                    r[agreement_column(j)] = a
            flat.append({"run": run, **r})
        frames.append(pd.DataFrame(flat))
    if not frames:
        return pd.DataFrame(columns=["run", "step"])
    df = pd.concat(frames, ignore_index=True)
    agree = agreement_columns(df)
    first = ["run", "step"] + [c for c in df.columns if c not in ("run", "step") and c not in agree]
    return df[first + agree].sort_values(["run", "step"], kind="stable").reset_index(drop=True)


def join_paper(ours: pd.DataFrame, paper: pd.DataFrame, *, variant: str | None = "main") -> pd.DataFrame:
    """Paper vs ours: each of our rows beside the paper's rows for the same task, strategy,
    param and metric (one per paper model; none -> NaN paper columns).

    ``variant`` keeps only that paper variant (``None`` = all). Paper columns get the
    prefix ``paper_``; ``param`` is matched after rounding to 6 decimals.
    """
    missing = [c for c in PAPER_COLUMNS if c not in paper.columns]
    if missing:
        raise MtpsdError(f"paper table lacks columns {missing}")
    if variant is not None:
        paper = paper[paper["variant"] == variant]
    keys = ["task", "strategy", "param", "metric"]
    left = ours.copy()
    right = paper[PAPER_COLUMNS].rename(columns={c: f"paper_{c}" for c in PAPER_COLUMNS if c not in keys})
    left["_p"] = left["param"].astype(float).round(6)
    right = right.assign(_p=right["param"].astype(float).round(6)).drop(columns="param")
    out = left.merge(right, how="left", left_on=["task", "strategy", "_p", "metric"],
                     right_on=["task", "strategy", "_p", "metric"])
    return out.drop(columns="_p")


def write_summary(evals: list[str | Path], train_metrics: list[str | Path], out_dir: str | Path,
                  decodes: list[str | Path] = ()) -> tuple[Path, Path]:
    """Write ``results.csv``, ``train_metrics.csv`` and ``speed.csv`` (from the decode
    summaries) into ``out_dir`` (atomically); return the first two paths."""
    from mtpsd.io import atomic_write_text

    out_dir = Path(out_dir)
    res, train = out_dir / "results.csv", out_dir / "train_metrics.csv"
    # every input read before anything is written: an unreadable one leaves the old summary whole
    tables = {res: summarize_evals(evals), train: summarize_train_metrics(train_metrics),
              out_dir / "speed.csv": summarize_speed(list(decodes))}
    for path, df in tables.items():
        atomic_write_text(path, df.to_csv(index=False))
    return res, train
