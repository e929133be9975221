"""Summary CSVs: paper columns first, units, baseline row, train metrics, paper join."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from mtpsd.cli import main
from mtpsd.errors import MtpsdError
from mtpsd.reporting.summarize import PAPER_COLUMNS, RESULT_COLUMNS, eval_rows, join_paper, summarize_evals
from tests.conftest import REPO

PAPER = REPO / "src" / "mtpsd" / "paper_results.csv"  # the paper's tables, packaged


def _result(task="mtpsd_gsm8k_cot", ckpt="final", setting="confadapt-tau0.9", strategy="confadapt",
            param=0.9, metrics=None):
    metrics = metrics or {"exact_match,flexible-extract": 0.25, "exact_match_stderr,flexible-extract": 0.1,
                          "exact_match,strict-match": 0.2, "exact_match_stderr,strict-match": 0.09}
    return {"run": "smol", "model": "smol", "chat_template": False, "task": task, "ckpt": ckpt,
            "setting": setting, "strategy": strategy, "param": param, "n_docs": 20,
            "results": {task: {"name": task, "alias": task, **metrics}},
            "decode_stats": {"eff_k_mean": 2.5, "eff_k_sd": 1.2, "tokens_per_s": 30.0, "tokens": 500,
                             "forward_passes": 200},
            "provenance": {"config": {"train": {"steps": 200}}}}


def test_columns_match_reference():
    paper_cols = list(pd.read_csv(PAPER, nrows=1).columns)
    assert PAPER_COLUMNS == paper_cols
    assert RESULT_COLUMNS[: len(paper_cols)] == paper_cols
    assert RESULT_COLUMNS[len(paper_cols):] == ["run", "checkpoint", "step", "setting", "metric_variant",
                                                "tokens_per_s", "forward_passes", "tokens", "n_docs", "source_file",
                                                "ablation", "ablation_key", "convention", "eff_k_project",
                                                "eff_k_authors"]


def test_eval_rows_units_and_names():
    rows = {r["metric"]: r for r in eval_rows(_result(), "x.json")}
    acc = rows["accuracy_pct"]
    assert acc["value"] == pytest.approx(25.0) and acc["value_se"] == pytest.approx(10.0)
    assert rows["accuracy_strict_pct"]["value"] == pytest.approx(20.0)
    assert (acc["table"], acc["task"], acc["strategy"], acc["param"], acc["chat_template"]) == \
        ("ours", "gsm8k", "confadapt", 0.9, "off")
    assert (acc["eff_k"], acc["eff_k_sd"], acc["step"], acc["metric_variant"]) == \
        (2.5, 1.2, 200.0, "exact_match,flexible-extract")
    base = eval_rows(_result(ckpt="step0", setting="static-k1", strategy="static", param=1), "y.json")
    assert {r["strategy"] for r in base} == {"baseline_step0"} and base[0]["step"] == 0.0
    mid = eval_rows(_result(ckpt="step50", setting="static-k1", strategy="static", param=1), "z.json")
    assert {r["strategy"] for r in mid} == {"static"} and mid[0]["step"] == 50.0
    cnn = eval_rows(_result(task="mtpsd_cnn_dailymail", metrics={"rouge_l,none": 0.21, "rouge_l_stderr,none": 0.01}))
    assert [(r["task"], r["metric"], r["value"]) for r in cnn] == [("cnn_dailymail", "rouge_l", 0.21)]


def test_summarize_cli_and_join(tmp_path):
    files = []
    for i, (ckpt, setting, strategy, param) in enumerate(
            [("final", "confadapt-tau0.9", "confadapt", 0.9), ("step0", "static-k1", "static", 1),
             ("final", "static-k2", "static", 2)]):
        p = tmp_path / f"e{i}.json"
        p.write_text(json.dumps(_result(ckpt=ckpt, setting=setting, strategy=strategy, param=param)))
        files.append(str(p))
    run_dir = tmp_path / "runs" / "smol"
    run_dir.mkdir(parents=True)
    rows = [{"step": 10, "loss": 2.0, "lr": 1e-5, "agreement": [1.0, 0.5, None]},
            {"step": 20, "loss": 1.5, "lr": 1e-5, "agreement": [1.0, 0.6, 0.2]}]
    (run_dir / "train_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "summary"
    assert main(["summarize", "--evals", *files, "--train-metrics", str(run_dir / "train_metrics.jsonl"),
                 "--out-dir", str(out)]) == 0
    res = pd.read_csv(out / "results.csv")
    assert list(res.columns) == RESULT_COLUMNS and len(res) == 6  # 3 files x 2 metrics
    train = pd.read_csv(out / "train_metrics.csv")
    assert list(train.columns) == ["run", "step", "loss", "lr", "agreement_j1", "agreement_j2", "agreement_j3"]
    assert train["run"].tolist() == ["smol", "smol"] and math.isnan(train["agreement_j3"][0])
    # the figures read what summarize writes (results.csv and train_metrics.csv)
    from mtpsd.plotting.data import agreement_columns, read_results, read_train_metrics

    assert agreement_columns(read_train_metrics(out / "train_metrics.csv")) == [
        "agreement_j1", "agreement_j2", "agreement_j3"]
    assert len(read_results(out / "results.csv")) == 6

    joined = join_paper(res, pd.read_csv(PAPER))
    hit = joined[(joined.strategy == "confadapt") & (joined.metric == "accuracy_pct")]
    assert sorted(hit["paper_model"]) == ["L3.1-8B-Magpie", "Qwen3-4B-Inst-2507"]
    assert sorted(hit["paper_value"]) == [64.1, 83.6] and sorted(hit["paper_eff_k"]) == [3.1, 3.3]
    base = joined[(joined.strategy == "baseline_step0") & (joined.metric == "accuracy_pct")]
    assert sorted(base["paper_value"]) == [69.5, 75.4]
    strict = joined[joined.metric == "accuracy_strict_pct"]
    assert strict["paper_value"].isna().all()  # the paper has no strict-match column


def test_summarize_errors(tmp_path):
    from mtpsd.errors import MtpsdError

    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"results": {}}))
    with pytest.raises(MtpsdError, match="missing key"):
        summarize_evals([p])


def test_task_names_reach_the_papers_tasks():
    """Every task of the paper's table has a name, and each of our paper tasks maps to one."""
    from mtpsd.plotting.data import PAPER_TASKS, load_paper_results, paper_task
    from mtpsd.reporting.summarize import TASK_NAMES

    assert set(load_paper_results()["task"]) <= set(PAPER_TASKS)
    assert paper_task("mtpsd_gsm8k_cot") == paper_task(TASK_NAMES["mtpsd_gsm8k_cot"]) == "gsm8k"
    assert paper_task("mtpsd_cnn_dailymail") == "cnn_dailymail"
    assert paper_task("mtpsd_synth_math") is None  # not a paper task


def test_speed_csv_from_the_batch1_decode_runs_feeds_figure_9(tmp_path):
    """speed.csv holds the decode rule's batch-1 runs; the wall-clock figure plots it."""
    from mtpsd.plotting.figures import make_figure
    from mtpsd.plotting.wallclock import wallclock_speedups
    from mtpsd.reporting.summarize import SPEED_TASK, write_summary

    decodes = []
    for setting, strategy, k, tau, tps, eff in (("static-k1", "static", 1, None, 100.0, 1.0),
                                                ("static-k4", "static", 4, None, 300.0, 4.0),
                                                ("confadapt-tau0.9", "confadapt", 4, 0.9, 250.0, 2.9)):
        p = tmp_path / "runs" / "r1" / "decode" / f"{setting}.summary.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"strategy": strategy, "k": k, "tau": tau, "tokens_per_s": tps, "eff_k_mean": eff,
                                 "eff_k_sd": 0.5, "tokens": 640, "forward_passes": 640 / eff, "n_generations": 64,
                                 "chat_template": False, "provenance": {"dtype": "torch.bfloat16"}}))
        decodes.append(p)
    write_summary([], [], tmp_path / "summary", decodes)
    speed = pd.read_csv(tmp_path / "summary" / "speed.csv")
    assert list(speed.columns) == RESULT_COLUMNS and len(speed) == 3
    assert set(speed["task"]) == {SPEED_TASK} and set(speed["run"]) == {"r1"}
    assert set(speed["metric_variant"]) == {"dtype=bfloat16"}
    ca = speed[speed["strategy"] == "confadapt"].iloc[0]
    assert (ca["param"], ca["eff_k"], ca["tokens_per_s"], ca["n_docs"]) == (0.9, 2.9, 250.0, 64)
    sp = wallclock_speedups(speed, SPEED_TASK).set_index("setting")["speedup"]
    assert sp["static-k4"] == 3.0 and sp["confadapt-tau0.9"] == 2.5
    fig = make_figure("wallclock", str(tmp_path / "summary" / "speed.csv"))
    assert fig.axes and "batch1_speed" in fig.axes[0].get_title()
    with pytest.raises(MtpsdError, match="missing key"):
        bad = tmp_path / "bad.summary.json"
        bad.write_text("{}")
        write_summary([], [], tmp_path / "s2", [bad])


def test_a_damaged_result_names_the_file_and_the_rule_that_rewrites_it(tmp_path, capsys):
    """A truncated evaluation JSON, decode summary or training-metrics line: `mtpsd summarize`
    prints one line naming the file and its rule, no traceback (tests/test_faults.py: in the DAG)."""
    good = json.dumps(_result())
    cases = {"evaluate": ("--evals", "e.json", good[: len(good) // 2]),
             "decode": ("--decodes", "decode/static-k1.summary.json", '{"strategy": "static", "k"'),
             "train_mtp": ("--train-metrics", "train_metrics.jsonl", '{"step": 1, "loss": 2.0}\n{"step": 2, "lo')}
    for rule, (flag, name, text) in cases.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        assert main(["summarize", flag, str(p), "--out-dir", str(tmp_path / "summary")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(p) in err and f"rule `{rule}` writes it" in err, err
        assert f"`rm {p}`" in err and "Traceback" not in err
    assert not (tmp_path / "summary").exists()
