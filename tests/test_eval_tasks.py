"""Our lm-eval task YAMLs: load offline through TaskManager, prompts, filters, hub variants."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mtpsd.evaluation import metrics as M
from mtpsd.errors import MtpsdError
from mtpsd.evaluation.evaluate import TASKS_DIR, known_tasks, task_config, task_manager

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
TASKS = ["mtpsd_cnn_dailymail", "mtpsd_creative_writing", "mtpsd_gsm8k_cot", "mtpsd_synth_math"]


@pytest.fixture(scope="module")
def tm():
    return task_manager()


@pytest.fixture(scope="module")
def local_files(gsm8k_dir):
    return {"mtpsd_synth_math": FIXTURES / "synth_math.jsonl", "mtpsd_gsm8k_cot": gsm8k_dir / "test.jsonl",
            "mtpsd_cnn_dailymail": FIXTURES / "cnn.jsonl", "mtpsd_creative_writing": FIXTURES / "stories.jsonl"}


def _load(tm, task, data):
    return tm.load([task_config(task, data)])["tasks"][task]


def _raw(task):
    """The YAML as text (no !function resolution)."""
    loader = type("L", (yaml.SafeLoader,), {})
    loader.add_constructor("!function", lambda lo, node: lo.construct_scalar(node))
    return yaml.load((TASKS_DIR / f"{task}.yaml").read_text(), Loader=loader)


def test_all_tasks_indexed(tm):
    from mtpsd.evaluation.tasks import UPSTREAM_TASKS, our_tasks

    assert our_tasks() == TASKS
    assert known_tasks() == sorted(TASKS + list(UPSTREAM_TASKS))
    assert set(known_tasks()) <= set(tm.all_tasks)


@pytest.mark.parametrize("task", TASKS)
def test_task_loads_offline_on_local_file(tm, local_files, task):
    t = _load(tm, task, local_files[task])
    docs = list(t.test_docs())
    assert len(docs) >= 3
    assert t.config.output_type == "generate_until"
    assert t.config.dataset_path == "json"
    text = t.doc_to_text(docs[0])
    assert isinstance(text, str) and len(text) > 10


def test_gsm8k_cot_prompt_and_stops(tm, local_files):
    t = _load(tm, "mtpsd_gsm8k_cot", local_files["mtpsd_gsm8k_cot"])
    doc = next(iter(t.test_docs()))
    assert t.doc_to_text(doc) == f"Q: {doc['question']}\nA: Let's think step by step."
    assert t.doc_to_target(doc) == doc["answer"].split("####")[-1].strip()
    assert t.config.num_fewshot == 8
    assert "Q:" in t.config.generation_kwargs["until"]
    ctx = t.fewshot_context(doc, num_fewshot=8)
    assert ctx.count("Let's think step by step.") == 9 and ctx.count("The answer is") == 8
    assert ctx.endswith(t.doc_to_text(doc))


def test_synth_math_prompt_matches_training_format(tm):
    t = _load(tm, "mtpsd_synth_math", FIXTURES / "synth_math.jsonl")
    doc = next(iter(t.test_docs()))
    assert t.doc_to_text(doc) == doc["question"] + "\n\n"
    assert t.doc_to_target(doc) == "7"
    from mtpsd.data.prompts import format_prompt

    assert t.doc_to_text(doc) == format_prompt(None, doc["question"], chat_template=False)


def test_filters_match_upstream_and_metrics():
    ours = _raw("mtpsd_gsm8k_cot")
    upstream = Path(__import__("lm_eval").__file__).parent / "tasks" / "gsm8k" / "gsm8k-cot.yaml"
    up = yaml.safe_load(upstream.read_text())
    assert ours["filter_list"] == up["filter_list"]
    assert ours["metric_list"] == up["metric_list"]
    assert ours["fewshot_config"]["samples"] == up["fewshot_config"]["samples"]
    pats = {f["name"]: f["filter"][0]["regex_pattern"] for f in ours["filter_list"]}
    assert pats == {"strict-match": M.GSM8K_STRICT, "flexible-extract": M.FLEXIBLE}
    synth = {f["name"]: f["filter"][0]["regex_pattern"] for f in _raw("mtpsd_synth_math")["filter_list"]}
    assert synth == {"strict-match": M.HASH_STRICT, "flexible-extract": M.FLEXIBLE}


@pytest.mark.parametrize("gen", ["so 3 + 4 = 7.\n#### 7", "the total is $1,200", "nothing", "#### -3 then 5"])
def test_lm_eval_regex_filter_agrees_with_metrics(gen):
    from lm_eval.filters.extraction import RegexFilter

    strict = list(RegexFilter(regex_pattern=M.HASH_STRICT).apply([[gen]], [{}]))[0][0]
    flex = list(RegexFilter(regex_pattern=M.FLEXIBLE, group_select=-1).apply([[gen]], [{}]))[0][0]
    assert strict == (M.extract_answer(gen, "strict", strict_pattern=M.HASH_STRICT) or "[invalid]")
    assert flex == (M.extract_answer(gen, "flexible") or "[invalid]")


def test_process_results_hooks(tm):
    t = _load(tm, "mtpsd_cnn_dailymail", FIXTURES / "cnn.jsonl")
    doc = next(iter(t.test_docs()))
    assert t.process_results(doc, [doc["highlights"]])["rouge_l"] == pytest.approx(1.0)
    assert t.process_results(doc, ["zebra"])["rouge_l"] == 0.0
    s = _load(tm, "mtpsd_creative_writing", FIXTURES / "stories.jsonl")
    sdoc = next(iter(s.test_docs()))
    assert "[ WP ]" not in s.doc_to_text(sdoc)
    r = s.process_results(sdoc, ["the cat sat on the mat the cat sat on the mat"])
    assert r["distinct_1"] == pytest.approx(5 / 12) and r["length_words"] == 12
    assert r["rep_4"] == pytest.approx(M.repetition_rate(M.word_tokens("the cat sat on the mat " * 2), 4))


@pytest.mark.parametrize("task, hub", [("mtpsd_gsm8k_cot", ("openai/gsm8k", "main")),
                                       ("mtpsd_cnn_dailymail", ("abisee/cnn_dailymail", "3.0.0")),
                                       ("mtpsd_creative_writing", ("euclaise/writingprompts", None))])
def test_hub_variant_is_real(task, hub):
    cfg = task_config(task)
    assert (cfg["dataset_path"], cfg.get("dataset_name")) == hub and cfg["test_split"] == "test"


def test_local_file_errors(tmp_path, monkeypatch):
    bad = tmp_path / "cnn.jsonl"
    bad.write_text('{"article": "x"}\n')
    with pytest.raises(MtpsdError, match="highlights"):
        task_config("mtpsd_cnn_dailymail", bad)
    with pytest.raises(MtpsdError, match="unknown task"):
        task_config("gsm8k")
    monkeypatch.chdir(tmp_path)  # no results/data/test.jsonl here
    with pytest.raises(MtpsdError, match="results/data/test.jsonl"):
        task_config("mtpsd_synth_math")


def test_generation_budget():
    from mtpsd.evaluation.tasks import generation_budget

    # the task's own budget, else decode.max_new_tokens; eval.max_gen_toks replaces either
    assert generation_budget("mtpsd_cnn_dailymail", default=256) == 128
    assert generation_budget("mtpsd_gsm8k_cot", default=300) == 300
    assert generation_budget("mtpsd_cnn_dailymail", overrides={"mtpsd_cnn_dailymail": 50}, default=256) == 50
    assert generation_budget("ifeval", default=256) == 1280
    assert generation_budget("gpqa_main_cot_n_shot", default=256) == 256
    assert task_config("mtpsd_cnn_dailymail", max_gen_toks=50)["generation_kwargs"]["max_gen_toks"] == 50
    gsm = task_config("mtpsd_gsm8k_cot", max_gen_toks=300)["generation_kwargs"]
    assert gsm["max_gen_toks"] == 300
    # the authors' stop strings: "Q:" and the end-of-text strings of Llama, Qwen, SentencePiece
    assert gsm["until"] == ["Q:", "</s>", "<|end_of_text|>", "<|eot_id|>", "<|endoftext|>", "<|im_end|>"]
    with pytest.raises(MtpsdError, match="unknown task"):
        generation_budget("gsm8k", default=256)


def test_cnn_dailymail_ends_only_at_end_ids(tm):
    """`until` is present and empty: lm-eval would otherwise stop at the few-shot delimiter."""
    assert _raw("mtpsd_cnn_dailymail")["generation_kwargs"]["until"] == []
    t = _load(tm, "mtpsd_cnn_dailymail", FIXTURES / "cnn.jsonl")
    assert t.config.generation_kwargs["until"] == [] and t.config.generation_kwargs["max_gen_toks"] == 128
    bare = dict(_raw("mtpsd_cnn_dailymail"))
    bare["generation_kwargs"] = {"max_gen_toks": 128, "do_sample": False}
    bare.update(dataset_path="json", dataset_kwargs={"data_files": {"test": str(FIXTURES / "cnn.jsonl")}})
    bare.pop("dataset_name")
    bare["process_results"] = task_config("mtpsd_cnn_dailymail", FIXTURES / "cnn.jsonl")["process_results"]
    assert tm.load([bare])["tasks"]["mtpsd_cnn_dailymail"].config.generation_kwargs["until"] == ["\n\n"]
