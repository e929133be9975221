"""`mtpsd evaluate` end to end on a tiny random Llama with a char-level tokenizer (2-3 docs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mtpsd.cli import main
from mtpsd.errors import MtpsdError
from tests.conftest import make_char_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder: config.json (limit 2, short generations), mtp_init and a base model."""
    import torch

    from mtpsd.config import Config, from_dict
    from mtpsd.io import atomic_write_json
    from tests.conftest import make_tiny_llama

    root = tmp_path_factory.mktemp("run")
    tok = make_char_tokenizer()
    for name, seed in (("mtp_init", 0), ("base", 1)):
        model = make_tiny_llama(64, seed=seed, dtype=torch.float32)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    cfg = from_dict(Config, {"runs": {"t": {}}, "run_names": ["t"], "model": {"name": "tinytest"},
                             "decode": {"k_max": 4, "max_new_tokens": 24},
                             "eval": {"limit": 2, "tasks": ["mtpsd_synth_math"],
                                      "max_gen_toks": {"mtpsd_creative_writing": 20}}})
    cfg.run = "t"
    atomic_write_json(root / "config.json", cfg.to_dict())
    return root


def _evaluate(run_dir, task, setting, data, *extra):
    out = run_dir / "eval" / task / "step0" / f"{setting}.json"
    rc = main(["evaluate", "--config", str(run_dir / "config.json"), "--checkpoint", str(run_dir / "mtp_init"),
               "--task", task, "--setting", setting, "--data", str(data), "--out", str(out), *extra])
    assert rc == 0
    return json.loads(out.read_text())


def test_checkpoint_label():
    from mtpsd.evaluation.evaluate import checkpoint_label

    assert checkpoint_label("results/runs/a/mtp_init") == "step0"
    assert checkpoint_label("results/runs/a/checkpoint") == "final"
    assert checkpoint_label("results/runs/a/checkpoints/step_000050") == "step50"


def test_evaluate_cli_static_and_confadapt(run_dir):
    k1 = _evaluate(run_dir, "mtpsd_synth_math", "static-k1", FIXTURES / "synth_math.jsonl")
    res = k1["results"]["mtpsd_synth_math"]
    assert set(res) >= {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert 0.0 <= res["exact_match,flexible-extract"] <= 1.0
    assert k1["n_docs"] == 2 and k1["n-samples"]["mtpsd_synth_math"]["effective"] == 2
    assert (k1["setting"], k1["strategy"], k1["param"], k1["ckpt"]) == ("static-k1", "static", 1, "step0")
    stats = k1["decode_stats"]
    assert stats["n_generations"] == 2 and stats["eff_k_mean"] == 1.0
    assert stats["tokens"] == stats["forward_passes"] == sum(int(v) for v in stats["chunk_size_hist"].values())
    assert k1["provenance"]["config"]["eval"]["limit"] == 2 and "versions" in k1 and "configs" in k1
    # the result records the dtype it ran in (model.dtype auto = float32 on CPU) and its budget
    assert k1["dtype"] == "float32" and k1["max_gen_toks"] == 24 and k1["fewshot_as_multiturn"] is False
    assert k1["engine"] == k1["decode_stats"]["engine"] == "eager"  # config decode.engine auto, on CPU
    # prompt is question + blank line (no few-shot), as the model was trained
    s = k1["samples"]["mtpsd_synth_math"][0]
    assert s["arguments"][0][0] == s["doc"]["question"] + "\n\n"

    ca = _evaluate(run_dir, "mtpsd_synth_math", "confadapt-tau0.5", FIXTURES / "synth_math.jsonl")
    assert (ca["strategy"], ca["param"], ca["k"]) == ("confadapt", 0.5, 4)
    st = ca["decode_stats"]
    assert 1.0 <= st["eff_k_mean"] <= 4.0
    assert st["eff_k_mean"] == pytest.approx(st["tokens"] / st["forward_passes"])


def test_eval_dtype_decides_the_accuracy_runs_dtype(run_dir, tmp_path):
    """eval.dtype (the paper's float32) overrides model.dtype for evaluations only."""
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["model"]["dtype"], cfg["eval"]["dtype"] = "float32", "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "r.json"
    assert main(["evaluate", "--config", str(tmp_path / "config.json"), "--checkpoint", str(run_dir / "mtp_init"),
                 "--task", "mtpsd_synth_math", "--setting", "static-k1", "--data",
                 str(FIXTURES / "synth_math.jsonl"), "--limit", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["dtype"] == "bfloat16"


def test_evaluate_creative_writing_post_metrics(run_dir):
    data = FIXTURES / "stories.jsonl"
    k1 = _evaluate(run_dir, "mtpsd_creative_writing", "static-k1", data, "--base-model", str(run_dir / "base"))
    res = k1["results"]["mtpsd_creative_writing"]
    assert k1["samples"]["mtpsd_creative_writing"][0]["arguments"][0][1]["max_gen_toks"] == 20  # eval.max_gen_toks
    assert 0.0 <= res["distinct_1,none"] <= 1.0 and 0.0 <= res["rep_4,none"] <= 1.0
    assert res["ppl_base,none"] > 1.0 and math.isfinite(res["ppl_base_stderr,none"])
    ref = run_dir / "eval" / "mtpsd_creative_writing" / "step0" / "static-k1.json"
    k2 = _evaluate(run_dir, "mtpsd_creative_writing", "static-k2", data, "--reference", str(ref))
    res2 = k2["results"]["mtpsd_creative_writing"]
    assert 0.0 <= res2["rouge_l_vs_k1,none"] <= 1.0
    assert all("rouge_l_vs_k1" in s for s in k2["samples"]["mtpsd_creative_writing"])
    # against itself ROUGE-L is 1 for every non-empty story
    from mtpsd.evaluation.evaluate import add_story_metrics

    again = add_story_metrics(json.loads(ref.read_text()), reference=json.loads(ref.read_text()))
    assert again["results"]["mtpsd_creative_writing"]["rouge_l_vs_k1,none"] == pytest.approx(1.0)


def test_evaluate_errors(run_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(MtpsdError, match="answer"):
        from mtpsd.evaluation.evaluate import task_config

        task_config("mtpsd_synth_math", bad)
    rc = main(["evaluate", "--config", str(run_dir / "config.json"), "--checkpoint", str(run_dir / "mtp_init"),
               "--task", "nope", "--setting", "static-k1", "--out", str(tmp_path / "x.json")])
    assert rc == 2
    rc = main(["evaluate", "--config", str(run_dir / "config.json"), "--checkpoint", str(run_dir / "mtp_init"),
               "--task", "mtpsd_synth_math", "--setting", "fast-k9", "--out", str(tmp_path / "x.json")])
    assert rc == 2


def test_lm_eval_cli_knows_the_mtpsd_model_and_our_tasks(run_dir, tmp_path, monkeypatch):
    """`mtpsd lm-eval run --model mtpsd ...` (lm-eval's own CLI) on a local task file."""
    data = tmp_path / "results" / "data" / "test.jsonl"  # the task's default data_files
    data.parent.mkdir(parents=True)
    data.write_text((FIXTURES / "synth_math.jsonl").read_text())
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "lm_eval_out"
    rc = main(["lm-eval", "run", "--model", "mtpsd", "--model_args",
               f"pretrained={run_dir / 'mtp_init'},strategy=static,k=2,max_gen_toks=16",
               "--tasks", "mtpsd_synth_math", "--limit", "2", "--device", "cpu", "--output_path", str(out)])
    assert rc == 0
    results = list(out.rglob("results_*.json"))
    assert len(results) == 1
    res = json.loads(results[0].read_text())
    assert "exact_match,flexible-extract" in res["results"]["mtpsd_synth_math"]
    assert res["config"]["model"] == "mtpsd"
