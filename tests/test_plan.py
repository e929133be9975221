"""`mtpsd plan`: the grid's work from task sizes; hours from measured figures where they exist,
else the stated time model on a named GPU (decoding from bytes and FLOPs per pass, training
from 6 x params x tokens); one compact table; no torch at parse time."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from mtpsd.cli import main
from mtpsd.config import deep_merge, read_yaml
from mtpsd.errors import MtpsdError
from mtpsd.evaluation.plan import (
    COMPUTE_EFFICIENCY,
    CPU,
    GPUS,
    KNOWN_CONFIGS,
    MEMORY_EFFICIENCY,
    TRAIN_MFU,
    Job,
    arch_of_config,
    collect_figures,
    decode_seconds,
    evaluation_grid,
    find_figure,
    plan,
    plan_device,
    plan_text,
    read_figures,
    render,
    resolve_runs,
    run_arch,
    run_jobs,
    tokens_per_pass,
    train_job,
    train_seconds,
)
from tests.conftest import REPO

PUBLISHED = {"run_names": ["pub-l3"],
             "runs": {"pub-l3": {"checkpoint": "jwkirchenbauer/L3-1-8B-Magpie-MTP",
                                 "model": {"name": "l3-8b-magpie", "source": "pretrained",
                                           "pretrained": "Magpie-Align/Llama-3.1-8B-Magpie-Align-SFT-v0.1",
                                           "chat_template": True}}}}


def _raw(*overlays: str, extra: dict | None = None) -> dict:
    raw = read_yaml(REPO / "config" / "config.yaml")
    for name in overlays:
        raw = deep_merge(raw, read_yaml(REPO / "config" / f"{name}.yaml"))
    return deep_merge(raw, extra or {})


def test_grid_trained_vs_imported():
    runs = resolve_runs(_raw("paper", "general"))
    cfg, imported = runs["l3-magpie"]
    assert not imported
    grid = evaluation_grid(cfg, imported=False)
    # per task: 5 static + 14 tau + verify, step 0 at k=1, 4 checkpoints x 2 settings = 29
    assert len(grid) == 29 * len(cfg.eval.tasks) == 29 * 7
    assert ("ifeval", "step0", "static-k1") in grid and ("aime25", "step50000", "confadapt-tau0.9") in grid
    # config/published.yaml: the paper's GSM8K table per checkpoint: step 0 (the base model) at k=1,
    # Static k 1..5, ConfAdapt at 14 taus; no verify, no intermediate checkpoints
    pub = resolve_runs(_raw("paper", "published"))
    for run in ("l3-magpie-mtp", "qwen3-4b-mtp"):
        pub_cfg, pub_imported = pub[run]
        assert pub_imported and pub_cfg.eval.tasks == ["mtpsd_gsm8k_cot"]
        grid = evaluation_grid(pub_cfg, imported=True)
        assert len(grid) == 20 and ("mtpsd_gsm8k_cot", "step0", "static-k1") in grid
        assert not any(s.startswith("verify") for _, _, s in grid) and {c for _, c, _ in grid} == {"final", "step0"}


def test_published_grid_is_the_papers_gsm8k_table():
    """Every row of the paper's main GSM8K table (paper_results.csv, math-evals) is one evaluation."""
    import csv

    from mtpsd.settings import format_setting

    with (REPO / "src" / "mtpsd" / "paper_results.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["table"] == "math-evals" and r["task"] == "gsm8k"]
    for model, run in (("L3.1-8B-Magpie", "l3-magpie-mtp"), ("Qwen3-4B-Inst-2507", "qwen3-4b-mtp")):
        paper = set()
        for r in (r for r in rows if r["model"] == model):
            if r["strategy"] == "baseline_step0":
                paper.add(("step0", "static-k1"))
            elif r["strategy"] == "static":
                paper.add(("final", format_setting("static", k=int(float(r["param"])))))
            else:
                paper.add(("final", format_setting("confadapt", tau=float(r["param"]))))
        cfg, _ = resolve_runs(_raw("paper", "published"))[run]
        assert {(c, s) for _, c, s in evaluation_grid(cfg, imported=True)} == paper, model


def test_jobs_are_task_sizes_times_budgets():
    cfg, _ = resolve_runs(_raw("paper", "general", extra=PUBLISHED))["pub-l3"]
    jobs = {(j.rule, j.task, j.setting, j.ckpt): j for j in run_jobs(cfg, "pub-l3", imported=True)}
    gsm = jobs[("evaluate", "mtpsd_gsm8k_cot", "static-k2", "final")]
    # 1319 GSM8K test documents in batches of 64 (eval.batch_size null: the evaluation memory
    # plan's batch for Llama-3.1-8B in float32 on 80 GB), 256 tokens at 2 per pass
    assert (gsm.documents, gsm.batch_size, gsm.budget, gsm.passes, gsm.dtype) == (1319, 64, 256, 21 * 128, "float32")
    assert gsm.width == 3  # the last chunk of 2 + one mask
    ca = jobs[("evaluate", "mtpsd_gsm8k_cot", "confadapt-tau0.9", "final")]
    assert ca.tokens_per_pass == 3.3  # the paper's effective k for L3.1-8B-Magpie on GSM8K
    assert ca.passes == 21 * 78 and ca.width == 4 + 15  # ceil(256 / 3.3) = 78; chunk + k_max - 1 masks
    assert jobs[("evaluate", "mtpsd_gsm8k_cot", "static-k1", "step0")].width == 1
    aime = jobs[("evaluate", "aime25", "static-k1", "final")]
    assert (aime.documents, aime.batch_size, aime.budget, aime.passes) == (30, 4, 32768, 8 * 32768)
    fixed = resolve_runs(_raw("paper", "general", extra=PUBLISHED | {"eval": {"batch_size": 32}}))["pub-l3"][0]
    assert {j.batch_size for j in run_jobs(fixed, "pub-l3", imported=True) if j.rule == "evaluate"} == {32}
    assert jobs[("evaluate", "mtpsd_cnn_dailymail", "verify-k4", "final")].tokens_per_pass == 1.0
    speed = jobs[("decode", "test prompts", "static-k1", "final")]
    assert (speed.documents, speed.batch_size, speed.passes, speed.dtype) == (64, 1, 64 * 256, "bfloat16")
    # a model the paper did not train: ConfAdapt counted at one token per pass (upper bound)
    tiny, _ = resolve_runs(read_yaml(REPO / "config" / "config.yaml"))["tiny"]
    assert tokens_per_pass(tiny, "mtpsd_synth_math", "final", "confadapt-tau0.9") == 1.0


@pytest.mark.parametrize("name, hub_id", [("llama31_8b", "Magpie-Align/Llama-3.1-8B-Magpie-Align-SFT-v0.1"),
                                          ("qwen3_4b", "Qwen/Qwen3-4B-Instruct-2507"),
                                          ("smollm2_135m", "HuggingFaceTB/SmolLM2-135M-Instruct")])
def test_architecture_arithmetic_matches_a_meta_model(name, hub_id):
    """The plan counts parameters without torch; the counts equal a meta-device model of the
    real config (benchmarks/arch/), and the packaged table holds the same values."""
    from mtpsd.training.memory_plan import model_shape

    cfg = json.loads((REPO / "benchmarks" / "arch" / f"{name}.json").read_text())
    assert {k: cfg.get(k, False) for k in KNOWN_CONFIGS[hub_id]} == KNOWN_CONFIGS[hub_id]
    arch, shape = arch_of_config(cfg, name), model_shape(REPO / "benchmarks" / "arch" / f"{name}.json")
    assert arch.params == shape.params
    assert (arch.layers, arch.q_dim, arch.kv_dim) == (shape.layers, shape.q_dim, shape.kv_dim)
    tied = cfg.get("tie_word_embeddings", False)
    assert arch.matrix_params == shape.params - (0 if tied else shape.embed_params)


def test_decode_model_is_the_stated_roofline():
    """One pass costs max(bytes / (bandwidth x efficiency), FLOPs / (peak x efficiency)): a batch-1
    bf16 pass is memory-bound (weights read once), a batch-32 float32 pass over 19 tokens per row
    compute-bound; the prefill adds one pass over every prompt per batch."""
    h100 = GPUS["h100"]
    arch = arch_of_config(KNOWN_CONFIGS["Magpie-Align/Llama-3.1-8B-Magpie-Align-SFT-v0.1"], "l3")
    one = Job("r", "decode", "t", "final", "static-k1", 1, 1, 100, 1.0, "bfloat16", 1, 0)
    ctx = 50  # mean context: no prompt, half the budget
    bytes_ = arch.matrix_params * 2 + ctx * 2 * 32 * 1024 * 2
    assert decode_seconds(one, arch, h100) == pytest.approx(100 * bytes_ / (3.35e12 * MEMORY_EFFICIENCY))
    wide = Job("r", "evaluate", "t", "final", "confadapt-tau0.9", 32, 32, 10, 1.0, "float32", 19, 0)
    ctx = 5
    flops = 2 * arch.matrix_params * 32 * 19 + 4 * 32 * 19 * ctx * 32 * 4096
    assert decode_seconds(wide, arch, h100) == pytest.approx(10 * flops / (67e12 * COMPUTE_EFFICIENCY))
    prompted = Job("r", "evaluate", "t", "final", "static-k1", 64, 32, 1, 1.0, "float32", 1, 800)
    pre = (2 * arch.matrix_params * 32 * 800 + 2 * 32 * 800 ** 2 * 32 * 4096) / (67e12 * COMPUTE_EFFICIENCY)
    per = max((arch.matrix_params * 4 + 32 * 800.5 * 2 * 32 * 1024 * 4) / (3.35e12 * MEMORY_EFFICIENCY),
              (2 * arch.matrix_params * 32 + 4 * 32 * 800.5 * 32 * 4096) / (67e12 * COMPUTE_EFFICIENCY))
    assert decode_seconds(prompted, arch, h100) == pytest.approx(2 * (pre + per))
    # the H200's bandwidth speeds the memory-bound pass, not the compute-bound one
    assert decode_seconds(one, arch, GPUS["h200"]) == pytest.approx(decode_seconds(one, arch, h100) * 3.35 / 4.8)
    assert decode_seconds(wide, arch, GPUS["h200"]) == pytest.approx(decode_seconds(wide, arch, h100))


def test_training_is_6_params_tokens_plus_teacher_and_recompute():
    cfg, _ = resolve_runs(_raw("paper", "paper_1gpu", "qwen3_4b"))["qwen3-4b"]
    job = train_job(cfg, "qwen3-4b")
    # 100k steps x 128 sequences x (160 + 5 regions x E[k - 1] = 8) tokens; checkpointing recomputes
    assert (job.steps, job.global_batch, job.packed_length, job.gpus, job.recompute) == (100_000, 128, 200.0, 1, True)
    arch = run_arch(cfg, "qwen3-4b", results="/nonexistent")
    expected = (6 + 2 + 2) * arch.params * 100_000 * 128 * 200 / (989e12 * TRAIN_MFU)
    assert train_seconds(job, arch, GPUS["h100"]) == pytest.approx(expected)
    paper, _ = resolve_runs(_raw("paper"))["qwen3-4b"]
    assert train_job(paper, "qwen3-4b").flops_per_param == 8  # no checkpointing in paper.yaml


def test_gpu_plan_estimates_every_cell_and_measured_figures_replace_estimates(tmp_path):
    runs = resolve_runs(_raw("paper", "paper_1gpu", "qwen3_4b"))
    rows = {(r.rule, r.task): r for r in plan(runs, [], device="h100", bench_dir=tmp_path, results=tmp_path)}
    assert set(rows) == {("train_mtp", "training"), ("evaluate", "mtpsd_gsm8k_cot"), ("decode", "test prompts"),
                         ("confidence_quality", "validation")}
    assert all(r.basis == "estimate (model)" and r.hours > 0 for r in rows.values())
    # measured figures (a GPU check's folder, found by --gpu h100) replace the estimates they cover
    gpu_dir = tmp_path / "gpu" / "nvidia-h100-80gb-hbm3"
    gpu_dir.mkdir(parents=True)
    cfg = runs["qwen3-4b"][0]
    batch = next(j.batch_size for j in run_jobs(cfg, "qwen3-4b", imported=False) if j.rule == "evaluate")
    (gpu_dir / "qwen3-4b-inst-2507.json").write_text(json.dumps(
        {"model_name": "qwen3-4b-inst-2507", "dtype": "float32", "batch_size": batch,  # the planned GSM8K batch
         "results": [{"method": "static-k1", "passes_per_s": 20.0}]}))
    arch = run_arch(runs["qwen3-4b"][0], "qwen3-4b", results=tmp_path)
    (gpu_dir / "train_qwen3_4b.json").write_text(json.dumps(
        {"params": arch.params, "device": "cuda", "seconds_per_sequence": 0.5}))
    (gpu_dir / "check.json").write_text(json.dumps({"results": ["not a speed figure"]}))
    figs = collect_figures(tmp_path, gpu="h100")
    assert {f.method for f in figs} == {"static-k1"}
    rows = {(r.rule, r.task): r for r in plan(runs, figs, device="h100", bench_dir=tmp_path, results=tmp_path)}
    gsm, train = rows[("evaluate", "mtpsd_gsm8k_cot")], rows[("train_mtp", "training")]
    assert gsm.basis == "measured~" and gsm.hours == pytest.approx(gsm.passes / 20.0 / 3600)
    assert train.basis == "measured" and train.hours == pytest.approx(100_000 * 128 * 0.5 / 3600)
    assert rows[("decode", "test prompts")].basis == "estimate (model)"  # speed runs: bf16 batch 1, unmeasured


def test_cpu_plan_uses_measured_cpu_figures_only(tmp_path):
    runs = resolve_runs(read_yaml(REPO / "config" / "config.yaml"))
    assert plan_device(runs, bench_dir=tmp_path) == (CPU, "CPU figures cover the work")
    rows = {(r.rule, r.task): r for r in plan(runs, collect_figures(tmp_path), device=CPU, bench_dir=tmp_path)}
    assert rows[("evaluate", "mtpsd_synth_math")].basis.startswith("measured")
    assert rows[("train_mtp", "training")].basis == "unmeasured"  # no CPU model: nothing guessed
    paper = resolve_runs(_raw("paper", "published"))
    assert plan_device(paper, bench_dir=tmp_path)[0] == "h100"  # no CPU figure covers the paper's models
    assert plan_device(paper, gpu_names=("NVIDIA H200",), bench_dir=tmp_path)[0] == "h200"
    assert plan_device(paper, requested="a100", bench_dir=tmp_path)[0] == "a100"
    with pytest.raises(MtpsdError, match="no time model"):
        plan_device(paper, requested="v100", bench_dir=tmp_path)


@pytest.mark.parametrize("overlays", [("paper", "published"), ("paper", "published", "general"),
                                      ("paper", "paper_1gpu", "qwen3_4b"), ("paper", "general"),
                                      ("paper", "published", "general", "paper_ablations"), ()])
def test_plan_prints_one_compact_table(overlays, tmp_path):
    text = plan_text(resolve_runs(_raw(*overlays)), bench_dir=tmp_path, notes=("GPU jobs: x",))
    lines = text.splitlines()
    assert len(lines) <= 30, text
    assert sum(1 for line in lines if line.startswith("| **total**")) == 1
    if overlays:
        assert lines[0].startswith("# GPU plan for H100 SXM 80 GB")
        body = [line for line in lines if line.startswith("| ") and "**total**" not in line][1:]
        assert body and all(line.rstrip(" |").endswith("estimate (model)") for line in body), text


def test_render_collapses_tasks_of_large_configs(tmp_path):
    both = {"run_names": ["l3-magpie", "qwen3-4b", "l3-magpie-mtp"]}  # trained runs and a published one
    runs = resolve_runs(_raw("paper", "published", "general", extra=both))
    rows = plan(runs, [], device="h100", bench_dir=tmp_path)
    assert len(rows) > 20
    compact, detail = render(rows, device="h100"), render(rows, device="h100", by_task=True)
    assert "| l3-magpie | evaluate | 7 tasks |" in compact and "| aime25 |" not in compact
    assert "| l3-magpie | evaluate | aime25 |" in detail
    total = [line for line in compact.splitlines() if "**total**" in line]
    assert total == [line for line in detail.splitlines() if "**total**" in line]


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


def test_committed_cpu_figures_and_cli(tmp_path, capsys):
    figs = collect_figures(tmp_path)
    assert {(f.model, f.dtype) for f in figs} >= {("tiny", "float32"), ("smollm2-135m-instruct", "bfloat16")}
    k1 = next(f for f in figs if f.model == "tiny" and f.method == "static-k1")
    assert k1.passes_per_s == 1169.0 and "README" in k1.source
    out = tmp_path / "plan.md"
    assert main(["plan", "--config", str(REPO / "config" / "config.yaml"), "--bench-dir", str(tmp_path),
                 "--gpu", "cpu", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# CPU plan") and "| tiny | evaluate | mtpsd_synth_math | 17 | 482,800 passes | 0.13 | measured~ |" in text
    assert main(["plan", "--config", str(REPO / "config" / "config.yaml"), "--config", str(REPO / "config" / "paper.yaml"),
                 "--config", str(REPO / "config" / "published.yaml"), "--gpu", "h200", "--bench-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "# GPU plan for H200 SXM 141 GB (requested)"


def test_seed_replicates_use_their_base_models_figures(tmp_path):
    """config/seeds.yaml: tiny-seed<N> has tiny's architecture, so tiny's CPU figures time it."""
    raw = deep_merge(read_yaml(REPO / "config" / "config.yaml"), read_yaml(REPO / "config" / "seeds.yaml"))
    rows = [r for r in plan(resolve_runs(raw), collect_figures(tmp_path), bench_dir=tmp_path)
            if r.rule in ("evaluate", "decode")]
    assert {r.run for r in rows} == {"tiny", *(f"tiny-seed{i}" for i in range(1, 5))}
    assert all(r.unmeasured == 0 for r in rows)
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


def test_the_plan_imports_no_torch():
    """Snakemake prints the plan while it parses the workflow: no torch, transformers or pandas."""
    code = ("import sys; from mtpsd.config import merge_sources; "
            "from mtpsd.evaluation.plan import plan_text, resolve_runs; "
            "plan_text(resolve_runs(merge_sources(['config/config.yaml', 'config/paper.yaml', "
            "'config/published.yaml']))); "
            "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'lm_eval') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_gsm8k_hours_follow_the_batch_count():
    """More documents per batch amortise the weights: the same work in fewer, wider passes."""
    h100 = GPUS["h100"]
    arch = arch_of_config(KNOWN_CONFIGS["Qwen/Qwen3-4B-Instruct-2507"], "q")
    narrow = Job("r", "evaluate", "t", "final", "static-k1", 64, 1, 64, 1.0, "bfloat16", 1, 100)
    wide = Job("r", "evaluate", "t", "final", "static-k1", 64, 32, 64, 1.0, "bfloat16", 1, 100)
    assert narrow.passes == 32 * wide.passes
    assert decode_seconds(wide, arch, h100) < decode_seconds(narrow, arch, h100) / 10
    assert math.isfinite(decode_seconds(wide, arch, GPUS["a100"]))
