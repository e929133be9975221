"""The paper's general evaluations through lm-eval's own tasks (AIME25, GPQA-main CoT
few-shot, BBH CoT few-shot, IFEval): registry, stop strings, an offline run, and the
summary mapping to paper_results.csv (hub data is never fetched: fixture results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mtpsd.errors import MtpsdError
from mtpsd.evaluation.tasks import (
    END_STRINGS,
    UPSTREAM_TASKS,
    lm_eval_tasks_dir,
    task_manager,
    upstream_eval_kwargs,
    upstream_gen_kwargs,
)
from mtpsd.reporting.summarize import eval_rows


@pytest.fixture(scope="module")
def tm():
    return task_manager()


def _raw_yaml(path: Path) -> dict:
    loader = type("L", (yaml.SafeLoader,), {})
    loader.add_constructor("!function", lambda lo, node: lo.construct_scalar(node))
    return yaml.load(path.read_text(), Loader=loader)


def test_upstream_tasks_are_lm_evals_own(tm):
    root = lm_eval_tasks_dir()
    for name, spec in UPSTREAM_TASKS.items():
        entry = tm.task_index[name]
        assert Path(entry.yaml_path).is_relative_to(root / spec.folder), name
    bbh = [t for t in tm.all_subtasks if t.startswith("bbh_cot_fewshot_")]
    assert len(bbh) == 27 and "bbh_cot_fewshot" in tm.all_groups
    # the budgets we record are the installed YAMLs' own
    assert _raw_yaml(root / "aime" / "aime25.yaml")["generation_kwargs"]["max_gen_toks"] == 32768
    assert _raw_yaml(root / "ifeval" / "ifeval.yaml")["generation_kwargs"]["max_gen_toks"] == 1280
    bbh_tpl = _raw_yaml(root / "bbh" / "cot_fewshot" / "_cot_fewshot_template_yaml")
    assert bbh_tpl["generation_kwargs"]["max_gen_toks"] == 1024
    gpqa = _raw_yaml(root / "gpqa" / "cot_n_shot" / "_gpqa_cot_n_shot_yaml")
    assert "max_gen_toks" not in gpqa["generation_kwargs"]
    assert [UPSTREAM_TASKS[t].yaml_max_gen_toks for t in ("aime25", "ifeval", "bbh_cot_fewshot",
                                                           "gpqa_main_cot_n_shot")] == [32768, 1280, 1024, None]
    # the metric keys the paper reports exist in those tasks
    assert {f["name"] for f in gpqa["filter_list"]} >= {"flexible-extract"}
    assert [f["name"] for f in bbh_tpl["filter_list"]] == ["get-answer"]
    ifeval = _raw_yaml(root / "ifeval" / "ifeval.yaml")
    assert "prompt_level_strict_acc" in [m["metric"] for m in ifeval["metric_list"]]


def test_stop_strings_are_the_papers():
    ends = list(END_STRINGS)
    assert ends == ["</s>", "<|end_of_text|>", "<|eot_id|>", "<|endoftext|>", "<|im_end|>"]
    assert upstream_gen_kwargs("aime25", 100)["until"] == ends
    assert upstream_gen_kwargs("gpqa_main_cot_n_shot", 100)["until"] == ends
    assert upstream_gen_kwargs("bbh_cot_fewshot", 100)["until"] == ["\n\n", "Q:"] + ends
    assert upstream_gen_kwargs("ifeval", 7) == {"until": ["Q:"] + ends, "max_gen_toks": 7, "do_sample": False}


def test_aime25_runs_offline_through_the_mtpsd_model(tm, tmp_path):
    """lm-eval's own AIME25 task (its YAML and scorer) on a local file, decoded by MTPLM with
    the paper's gen_kwargs: the stop strings and budget reach the decoder; the result has the
    key the summary maps to the paper's accuracy."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks._yaml_loader import load_yaml

    from mtpsd.evaluation.lm_eval_adapter import MTPLM
    from tests.conftest import make_char_tokenizer, make_tiny_llama

    torch.set_num_threads(1)
    data = tmp_path / "aime.jsonl"
    data.write_text("".join(json.dumps({"id": i, "problem": f"what is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(3)))
    cfg = dict(load_yaml(tm.task_index["aime25"].yaml_path, resolve_func=True))
    cfg.update(dataset_path="json", dataset_kwargs={"data_files": {"test": str(data)}})
    lm = MTPLM(pretrained=make_tiny_llama(64, dtype=torch.float32), tokenizer=make_char_tokenizer(),
               strategy="static", k=2, batch_size=1, max_gen_toks=256)
    raw = simple_evaluate(model=lm, tasks=[cfg], task_manager=tm, gen_kwargs=upstream_gen_kwargs("aime25", 6),
                          log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                          fewshot_random_seed=0)
    res = raw["results"]["aime25"]
    assert "exact_match,none" in res and res["exact_match,none"] == 0.0  # a random model
    args = raw["samples"]["aime25"][0]["arguments"][0][1]
    assert args["until"][:5] == list(END_STRINGS) and args["max_gen_toks"] == 6
    assert len(lm.results) == 3 and all(len(r.tokens) <= 6 for r in lm.results)
    out = {"task": "aime25", "strategy": "static", "param": 2, "setting": "static-k2", "ckpt": "final",
           "run": "r", "model": "m", "results": raw["results"], "n_docs": 3}
    (row,) = eval_rows(json.loads(json.dumps(out, default=str)))
    assert (row["task"], row["metric"], row["value"]) == ("aime25", "accuracy_pct", 0.0)


def test_gpqa_runs_five_shot(tm, tmp_path):
    """lm-eval's gpqa_main_cot_n_shot sets no few-shot count (0-shot by default); mtpsd runs it
    5-shot (mtpsd.evaluation.tasks: the GPQA authors' few-shot prompt and count). On a local
    stand-in with GPQA's fields: five answered examples, then the question."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks._yaml_loader import load_yaml

    from mtpsd.evaluation.lm_eval_adapter import MTPLM
    from tests.conftest import make_char_tokenizer, make_tiny_llama

    torch.set_num_threads(1)
    data = tmp_path / "gpqa.jsonl"
    data.write_text("".join(json.dumps({"Question": f"q{i}?", "Correct Answer": f"c{i}", "Incorrect Answer 1": "a",
                                        "Incorrect Answer 2": "b", "Incorrect Answer 3": "d"}) + "\n"
                            for i in range(8)))
    cfg = dict(load_yaml(tm.task_index["gpqa_main_cot_n_shot"].yaml_path, resolve_func=True))
    cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {"train": str(data)}})
    kwargs = upstream_eval_kwargs("gpqa_main_cot_n_shot", 2)
    assert kwargs["num_fewshot"] == 5 and "num_fewshot" not in upstream_eval_kwargs("aime25", 2)
    chars = "0123456789abcdefghijklmnopqrstuvwxyzQCLAB \n.:?()'"
    lm = MTPLM(pretrained=make_tiny_llama(64, dtype=torch.float32), tokenizer=make_char_tokenizer(chars),
               strategy="static", k=1, batch_size=1, max_gen_toks=2)
    raw = simple_evaluate(model=lm, tasks=[cfg], task_manager=tm, limit=1, log_samples=True, random_seed=0,
                          numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0, **kwargs)
    assert raw["n-shot"]["gpqa_main_cot_n_shot"] == 5
    context = raw["samples"]["gpqa_main_cot_n_shot"][0]["arguments"][0][0]
    assert context.startswith("Here are some example questions from experts.")
    # lm-eval joins each example's text and answer with its target delimiter (a space): "...: (B)"
    assert context.count("Question: ") == 6 and context.count("Let's think step by step:  (") == 5


def _result(task: str, metrics: dict, strategy="static", param=1, run="published-l3") -> dict:
    setting = f"static-k{param}" if strategy == "static" else f"confadapt-tau{param}"
    return {"task": task, "strategy": strategy, "param": param, "setting": setting, "ckpt": "final",
            "run": run, "model": "l3-8b-magpie-mtp", "chat_template": True, "n_docs": 10,
            "decode_stats": {"eff_k_mean": 1.0, "eff_k_sd": 0.0}, "results": {task: metrics}}


# lm-eval 0.4.13 result keys of each task (a group reports its aggregate under its own name)
FIXTURE_RESULTS = {
    "gpqa_main_cot_n_shot": {"exact_match,strict-match": 0.10, "exact_match_stderr,strict-match": 0.014,
                             "exact_match,flexible-extract": 0.154, "exact_match_stderr,flexible-extract": 0.017},
    "bbh_cot_fewshot": {"exact_match,get-answer": 0.576, "exact_match_stderr,get-answer": 0.005},
    "ifeval": {"prompt_level_strict_acc,none": 0.425, "prompt_level_strict_acc_stderr,none": 0.021,
               "prompt_level_loose_acc,none": 0.46, "prompt_level_loose_acc_stderr,none": 0.021,
               "inst_level_strict_acc,none": 0.55, "inst_level_loose_acc,none": 0.58},
    "aime25": {"exact_match,none": 0.0, "exact_match_stderr,none": 0.0},
}


@pytest.mark.parametrize("task, paper_task, value", [("gpqa_main_cot_n_shot", "gpqa_main", 15.4),
                                                     ("bbh_cot_fewshot", "bbh", 57.6),
                                                     ("ifeval", "ifeval", 42.5), ("aime25", "aime25", 0.0)])
def test_summary_maps_general_evals_to_the_papers_rows(task, paper_task, value):
    rows = eval_rows(_result(task, FIXTURE_RESULTS[task]))
    acc = [r for r in rows if r["metric"] == "accuracy_pct"]
    assert len(acc) == 1 and acc[0]["task"] == paper_task
    assert acc[0]["value"] == pytest.approx(value)
    if value:
        assert acc[0]["value_se"] > 0


def test_report_table_sets_general_evals_beside_the_paper():
    import pandas as pd

    from mtpsd.plotting.data import load_paper_results
    from mtpsd.reporting.summarize import RESULT_COLUMNS
    from mtpsd.reporting.tables import paper_vs_ours

    rows = []
    for task, metrics in FIXTURE_RESULTS.items():
        rows += eval_rows(_result(task, metrics))
        rows += eval_rows(_result(task, metrics, strategy="confadapt", param=0.9))
    ours = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    table = paper_vs_ours(ours, load_paper_results())
    got = {(r["task"], r["setting"]): r["L3.1-8B-Magpie"] for _, r in table.iterrows()}
    assert got[("ifeval (ifeval)", "Static k=1")] == "42.5 ± 2.1"
    assert got[("bbh (bbh)", "ConfAdapt τ=0.9")] == "53.8 ± 0.5"
    assert got[("gpqa_main (gpqa_main)", "Static k=1")] == "15.4 ± 1.7"
    assert got[("aime25 (aime25)", "Static k=1")] == "0.0 ± 0.0"


def test_config_and_evaluate_refuse_what_cannot_run(tmp_path):
    from mtpsd.config import Config, from_dict
    from mtpsd.evaluation.evaluate import evaluate

    with pytest.raises(MtpsdError, match="unknown task"):
        from_dict(Config, {"runs": {"t": {}}, "run_names": ["t"], "eval": {"tasks": ["gsm8k"]}})
    cfg = from_dict(Config, {"runs": {"t": {}}, "run_names": ["t"], "eval": {"tasks": ["ifeval"]}})
    with pytest.raises(MtpsdError, match="hub dataset only"):
        evaluate(cfg, tmp_path / "no-model", "ifeval", "static-k1", data_file=tmp_path / "x.jsonl")
