"""`mtpsd plan`: the evaluation grid's work from task sizes, hours only from measured figures."""

from __future__ import annotations

import json

import pytest

from mtpsd.cli import main
from mtpsd.config import deep_merge, read_yaml
from mtpsd.evaluation.plan import (
    CPU,
    collect_figures,
    evaluation_grid,
    find_figure,
    plan,
    read_figures,
    render,
    resolve_runs,
    run_jobs,
    tokens_per_pass,
)
from tests.conftest import REPO

PUBLISHED = {"run_names": ["pub-l3"],
             "runs": {"pub-l3": {"checkpoint": "jwkirchenbauer/L3-1-8B-Magpie-MTP",
                                 "model": {"name": "l3-8b-magpie", "source": "pretrained",
                                           "pretrained": "Magpie-Align/Llama-3.1-8B-Magpie-Align-SFT-v0.1",
                                           "chat_template": True}}}}


def _paper_raw(extra: dict | None = None) -> dict:
    raw = deep_merge(read_yaml(REPO / "config" / "config.yaml"), read_yaml(REPO / "config" / "paper.yaml"))
    return deep_merge(raw, extra or {})


def test_grid_trained_vs_imported():
    runs = resolve_runs(_paper_raw())
    cfg, imported = runs["l3-magpie"]
    assert not imported
    grid = evaluation_grid(cfg, imported=False)
    # per task: 5 static + 14 tau + verify, step 0 at k=1, 4 checkpoints x 2 settings = 29
    assert len(grid) == 29 * len(cfg.eval.tasks)
    assert ("ifeval", "step0", "static-k1") in grid and ("aime25", "step50000", "confadapt-tau0.9") in grid
    pub_cfg, pub_imported = resolve_runs(_paper_raw(PUBLISHED))["pub-l3"]
    assert pub_imported
    assert len(evaluation_grid(pub_cfg, imported=True)) == 20 * len(pub_cfg.eval.tasks)


def test_jobs_are_task_sizes_times_budgets():
    cfg, _ = resolve_runs(_paper_raw(PUBLISHED))["pub-l3"]
    jobs = {(j.rule, j.task, j.setting): j for j in run_jobs(cfg, "pub-l3", imported=True)}
    gsm = jobs[("evaluate", "mtpsd_gsm8k_cot", "static-k2")]
    # 1319 GSM8K test documents in batches of 64 (eval.batch_size null: the evaluation memory
    # plan's batch for Llama-3.1-8B in float32 on 80 GB), 256 tokens at 2 per pass
    assert (gsm.documents, gsm.batch_size, gsm.budget, gsm.passes) == (1319, 64, 256, 21 * 128)
    ca = jobs[("evaluate", "mtpsd_gsm8k_cot", "confadapt-tau0.9")]
    assert ca.tokens_per_pass == 3.3  # the paper's effective k for L3.1-8B-Magpie on GSM8K
    assert ca.passes == 21 * 78  # ceil(256 / 3.3) = 78
    aime = jobs[("evaluate", "aime25", "static-k1")]
    assert (aime.documents, aime.batch_size, aime.budget, aime.passes) == (30, 4, 32768, 8 * 32768)
    fixed = resolve_runs(_paper_raw(PUBLISHED | {"eval": {"batch_size": 32}}))["pub-l3"][0]
    assert {j.batch_size for j in run_jobs(fixed, "pub-l3", imported=True) if j.rule == "evaluate"} == {32}
    assert jobs[("evaluate", "mtpsd_cnn_dailymail", "verify-k4")].tokens_per_pass == 1.0
    speed = jobs[("decode", "test prompts", "static-k1")]
    assert (speed.documents, speed.batch_size, speed.passes) == (64, 1, 64 * 256)  # decode.speed_prompts
    # a model the paper did not train: ConfAdapt counted at one token per pass (upper bound)
    tiny, _ = resolve_runs(read_yaml(REPO / "config" / "config.yaml"))["tiny"]
    assert tokens_per_pass(tiny, "mtpsd_synth_math", "final", "confadapt-tau0.9") == 1.0


def test_read_figures_formats(tmp_path):
    bench = tmp_path / "decode_speed.json"  # benchmarks/decode_speed.py output (batch 1)
    bench.write_text(json.dumps({"model": "results/runs/tiny/checkpoint", "dtype": "torch.float32", "results": [
        {"method": "hf-greedy", "forward_passes": 100, "wall_s": 1.0, "tokens_per_s": 100.0, "eff_k": 1.0},
        {"method": "static-k1", "forward_passes": 200, "wall_s": 0.5, "tokens_per_s": 400.0, "eff_k": 1.0}]}))
    (f,) = read_figures(bench, device=CPU)
    assert (f.model, f.dtype, f.batch_size, f.method, f.passes_per_s) == ("decode_speed", "float32", 1, "static-k1", 400.0)
    fig, exact = find_figure([f], "tiny", "tiny", "float32", 1, "static-k2")
    assert fig is f and not exact  # matched through the run folder in "model"; k1's rate for k2
    gpu = tmp_path / "l3.json"
    gpu.write_text(json.dumps({"model_name": "l3-8b-magpie", "dtype": "float32", "batch_size": 32,
                               "results": [{"method": "static-k1", "tokens_per_s": 960.0, "eff_k": 1.0}]}))
    (g,) = read_figures(gpu, device="H100")
    assert g.passes_per_s == 30.0  # 960 tokens/s over a batch of 32 sequences
    assert find_figure([g], "l3-8b-magpie", "x", "bfloat16", 32, "static-k1") == (None, False)


def test_plan_hours_only_from_measured_figures(tmp_path):
    runs = {"pub-l3": resolve_runs(_paper_raw(PUBLISHED))["pub-l3"]}
    rows = plan(runs, [], device="H100")
    assert all(r.hours is None for r in rows)
    text = render(rows, device="H100", figures=[])
    assert "unmeasured" in text and "GSM8K evaluations (20 jobs) fit in 2 hours at >= " in text
    gpu_dir = tmp_path / "gpu" / "H100"
    gpu_dir.mkdir(parents=True)
    (gpu_dir / "l3-8b-magpie.json").write_text(json.dumps(
        {"model_name": "l3-8b-magpie", "dtype": "float32", "batch_size": 64,  # the plan's GSM8K batch
         "results": [{"method": "static-k1", "passes_per_s": 20.0}]}))
    figs = collect_figures(tmp_path, gpu="H100")
    rows = {(r.rule, r.task): r for r in plan(runs, figs, device="H100")}
    gsm = rows[("evaluate", "mtpsd_gsm8k_cot")]
    assert gsm.hours == pytest.approx(gsm.passes / 20.0 / 3600) and gsm.approx
    assert rows[("decode", "test prompts")].hours is None  # speed runs: bf16 at batch 1, not measured
    assert collect_figures(tmp_path, gpu=None, committed=None) == []


def test_committed_cpu_figures_and_cli(tmp_path, capsys):
    figs = collect_figures(tmp_path)
    assert {(f.model, f.dtype) for f in figs} >= {("tiny", "float32"), ("smollm2-135m-instruct", "bfloat16")}
    k1 = next(f for f in figs if f.model == "tiny" and f.method == "static-k1")
    assert k1.passes_per_s == 1169.0 and "README" in k1.source
    out = tmp_path / "plan.md"
    assert main(["plan", "--config", str(REPO / "config" / "config.yaml"), "--bench-dir", str(tmp_path),
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert "| tiny | evaluate | mtpsd_synth_math | 17 | 200 | 1 | 160 |" in text
    assert "GPU figures: unmeasured" in text and "jobs) |" not in text  # every tiny job is measured on CPU


def test_seed_replicates_use_their_base_models_figures(tmp_path):
    """config/seeds.yaml: tiny-seed<N> has tiny's architecture, so tiny's CPU figures time it."""
    raw = deep_merge(read_yaml(REPO / "config" / "config.yaml"), read_yaml(REPO / "config" / "seeds.yaml"))
    rows = plan(resolve_runs(raw), collect_figures(tmp_path))
    assert {r.run for r in rows} == {"tiny", *(f"tiny-seed{i}" for i in range(1, 5))}
    assert all(r.hours is not None and r.unmeasured_jobs == 0 for r in rows)
    seed1 = {(r.rule, r.task): r.hours for r in rows if r.run == "tiny-seed1"}
    tiny = {(r.rule, r.task): r.hours for r in rows if r.run == "tiny"}
    assert seed1[("evaluate", "mtpsd_synth_math")] < tiny[("evaluate", "mtpsd_synth_math")]  # no checkpoint sweep
    assert find_figure(collect_figures(tmp_path), "tiny-seedling", "x", "float32", 1, "static-k1")[0] is None


def test_paper_task_names_agree_with_the_summary():
    from mtpsd.evaluation.plan import PAPER_TASK_NAMES
    from mtpsd.reporting.paper_models import paper_model
    from mtpsd.reporting.summarize import TASK_NAMES

    assert all(TASK_NAMES[t] == name for t, name in PAPER_TASK_NAMES.items())
    assert paper_model("L3-1-8B-Magpie-MTP") == "L3.1-8B-Magpie" and paper_model("smollm2-135m-instruct") is None
