"""The evaluation memory plan: its terms at the exact Llama-3.1-8B and Qwen3-4B configs against
the engine's own allocation and formula, the batch per task of the paper's overlays on an
80 GB GPU, the refusal before loading a weight, the re-plan from real prompts, and the total
against the measured peak of a real engine call on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from mtpsd.config import load_config
from mtpsd.errors import MtpsdError
from mtpsd.evaluation import memory_plan as em

from .conftest import REPO

ARCH = REPO / "benchmarks" / "arch"
GiB = em.GiB
PUBLISHED = [REPO / "config" / "config.yaml", REPO / "config" / "paper.yaml", REPO / "config" / "published.yaml",
             REPO / "config" / "general.yaml"]  # the published run with the general evaluations: all seven tasks


@pytest.fixture(scope="module")
def shapes():
    return {"llama": em.eval_shape(ARCH / "llama31_8b.json"), "qwen": em.eval_shape(ARCH / "qwen3_4b.json")}


@pytest.mark.parametrize("name,layers,kv_per_token", [("llama", 32, 32 * 2 * 8 * 128 * 4),
                                                      ("qwen", 36, 36 * 2 * 8 * 128 * 4)])
def test_kv_cache_is_the_engines_allocation(shapes, name, layers, kv_per_token):
    """AIME25 in float32 at batch 3: rows 4 (a power of two), slots = 4096 + 32768 + 32 rounded
    up to 256 (+ the dump slot); the bytes equal a RowCache built for the exact config (meta
    device: nothing allocated) and the hand formula."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from mtpsd.decoding.kv_cache import RowCache

    m = shapes[name]
    assert m.layers == layers and m.kv_heads == 8 and m.head_dim == 128
    s = em.EvalSetup(task="aime25", budget=32768, prompt_tokens=4096, k=16, batch=3)
    assert (s.rows, s.slots) == (4, 37120)
    assert em.kv_cache_bytes(m, s) == 4 * 37121 * kv_per_token
    cfg = AutoConfig.for_model(**json.loads((ARCH / f"{'llama31_8b' if name == 'llama' else 'qwen3_4b'}.json")
                                            .read_text()))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    assert RowCache.for_model(model, s.rows, s.slots).nbytes == em.kv_cache_bytes(m, s)
    assert m.params == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_pass_working_set_is_the_engines_bound(shapes):
    """The largest of the three passes, each ``engine.pass_bytes`` at the engine's shapes."""
    from mtpsd.decoding.sizes import pass_bytes

    m = shapes["llama"]
    dims = dict(heads=32, kv_heads=8, hidden=4096, intermediate=14336, vocab=128256, dtype_bytes=4)
    s = em.EvalSetup(task="bbh_cot_fewshot", budget=1024, prompt_tokens=1800, k=16, batch=16)
    first = pass_bytes(batch=16, width=512 + 15, kv=2048, read=16, **dims)  # 1800 + 15 -> 2048 (kv bucket)
    prefill = pass_bytes(batch=16, width=512, kv=1536, read=1, **dims)  # 1800 - 512 = 1288 -> 1536
    decode = pass_bytes(batch=16, width=31, kv=s.slots, read=31, **dims)
    kind, work = em.pass_working_set(m, s)
    assert work == max(first, prefill, decode) and kind == "first pass"
    short = em.EvalSetup(task="t", budget=32768, prompt_tokens=100, k=16, batch=4)
    assert "prefill pass" not in dict([em.pass_working_set(m, short)])  # no prefill below the chunk
    plan = em.plan_eval_memory(m, s)
    assert plan.parts["weights"] == m.params * 4
    assert plan.overhead == pytest.approx(GiB + 0.1 * plan.allocated)


@pytest.mark.parametrize("run,arch", [("l3-magpie-mtp", "llama"), ("qwen3-4b-mtp", "qwen")])
@pytest.mark.parametrize("gib", [79.6, 74.5])  # an 80 GB GPU as torch sees it; 80e9 bytes
def test_every_published_task_fits_80gb_in_float32(shapes, run, arch, gib):
    """Done-when of issue 23: every task of the published run (paper.yaml's seven, AIME25
    included) gets a batch whose peak fits, and twice that batch would not (or is capped)."""
    cfg = load_config([str(p) for p in PUBLISHED], run=run)
    m = shapes[arch]
    setups = em.task_setups(cfg)
    assert {s.task for s in setups} >= {"mtpsd_gsm8k_cot", "aime25", "gpqa_main_cot_n_shot", "bbh_cot_fewshot",
                                        "ifeval"}
    assert all(s.dtype == "float32" for s in setups)
    for tp in em.plan_tasks(m, setups, gib * GiB):
        assert tp.plan is not None, tp.error
        assert tp.plan.peak <= gib * GiB and tp.longest_prompt >= tp.setup.prompt_tokens
        b = tp.batch
        if 2 * b <= em.batch_cap(tp.setup):
            assert not em.plan_eval_memory(m, replace(tp.setup, batch=2 * b)).fits(gib * GiB)
        if tp.setup.task == "aime25":
            assert tp.setup.budget == 32768 and b >= 2
            assert tp.plan.parts["KV cache"] > 8 * GiB * b  # > 8 GiB per row at 36k slots in float32


def test_batch_is_capped_by_documents_and_max(shapes):
    m = shapes["qwen"]
    s = em.EvalSetup(task="t", budget=64, prompt_tokens=100, k=4, documents=5)
    assert em.choose_batch(m, s, 1000 * GiB).setup.batch == 8
    assert em.choose_batch(m, replace(s, documents=None), 1000 * GiB).setup.batch == em.MAX_EVAL_BATCH


def test_refuses_naming_what_would_fit(shapes):
    m = shapes["llama"]
    s = em.EvalSetup(task="aime25", budget=32768, prompt_tokens=200, k=16)
    with pytest.raises(MtpsdError) as e:
        em.check_eval_fits(m, s, 40 * GiB)
    msg = str(e.value)
    assert "does not fit even at batch 1" in msg and "eval.dtype: bfloat16" in msg
    assert "eval.max_gen_toks: {aime25: " in msg and "a GPU with at least" in msg
    budget = int(msg.split("eval.max_gen_toks: {aime25: ")[1].split("}")[0])
    assert em.plan_eval_memory(m, replace(s, budget=budget)).fits(40 * GiB)
    assert not em.plan_eval_memory(m, replace(s, budget=budget + 1)).fits(40 * GiB)


def test_evaluate_refuses_before_loading_a_weight(tmp_path, monkeypatch):
    """eval.batch_size null: a checkpoint folder with a config.json and no weights is refused by
    the plan (a load would fail differently)."""
    from mtpsd.config import Config, from_dict
    from mtpsd.evaluation.evaluate import evaluate

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    data = json.loads((ARCH / "llama31_8b.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(data))
    monkeypatch.setattr(em, "device_memory_bytes", lambda device: 20.0 * GiB)
    cfg = from_dict(Config, {"runs": {"t": {}}, "run_names": ["t"], "eval": {"tasks": ["aime25"], "dtype": "float32"}})
    cfg.run = "t"
    assert cfg.eval.batch_size is None
    with pytest.raises(MtpsdError, match="does not fit even at batch 1"):
        evaluate(cfg, ckpt, "aime25", "static-k1")


def test_mtplm_replans_from_the_real_requests(tmp_path):
    """MTPLM with a batch planner: the batch lm-eval decodes at is the plan's for the longest
    tokenized request and its budget (here: a memory that holds exactly batch 2)."""
    from lm_eval.api.instance import Instance

    from mtpsd.evaluation.lm_eval_adapter import MTPLM
    from tests.conftest import make_char_tokenizer, make_tiny_llama

    model = make_tiny_llama(64, dtype=torch.float32)
    model.save_pretrained(tmp_path / "m")
    tok = make_char_tokenizer()
    m = em.eval_shape(tmp_path / "m")
    s = em.EvalSetup(task="t", budget=12, prompt_tokens=1, k=2, device="cpu", documents=4)
    prompts = ["1+1=", "12+30=", "7+7+7+7=", "3="]
    seen = []

    def planner(p, budget):
        seen.append((p, budget))
        return em.check_eval_fits(m, replace(s, prompt_tokens=p, budget=budget), two).setup.batch

    lm = MTPLM(pretrained=model, tokenizer=tok, strategy="static", k=2, batch_size=1, max_gen_toks=12,
               batch_planner=planner)
    longest = 1 + max(len(lm.tok_encode(p)) for p in prompts)
    assert longest == 1 + 1 + len("7+7+7+7=")  # BOS + characters, + 1 allowance
    two = em.plan_eval_memory(m, replace(s, batch=2, prompt_tokens=longest)).peak
    reqs = [Instance("generate_until", {}, (p, {"until": ["\n"], "max_gen_toks": 12, "do_sample": False}), i)
            for i, p in enumerate(prompts)]
    out = lm.generate_until(reqs)
    assert len(out) == 4 and seen == [(longest, 12)]
    assert lm.batch_size == 2 and lm.planned == {"longest_prompt": longest, "budget": 12, "batch_size": 2}
    assert {r.extras["batch_size"] for r in lm.results} == {2}


def test_plan_memory_cli_eval_json(tmp_path, capsys):
    from mtpsd.cli import main

    out = tmp_path / "plan.json"
    rc = main(["plan-memory", *sum((["--config", str(p)] for p in PUBLISHED), []), "--run", "qwen3-4b-mtp",
               "--stage", "eval", "--gpu-memory", "79.6", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "aime25" in text and "longest prompt at this batch" in text
    rec = json.loads(out.read_text())["eval"]
    assert rec["model"]["name"] == "qwen3_4b"
    by_task = {t["task"]: t for t in rec["tasks"]}
    assert by_task["aime25"]["budget"] == 32768 and by_task["aime25"]["batch"] >= 2
    assert all(t["peak_bytes"] <= 79.6 * GiB for t in rec["tasks"])
    assert main(["plan-memory", *sum((["--config", str(p)] for p in PUBLISHED), []), "--run", "qwen3-4b-mtp",
                 "--stage", "eval", "--gpu-memory", "12"]) == 1  # float32 AIME25 cannot fit 12 GiB


@pytest.mark.slow
def test_gsm8k_prompt_length_is_remeasured(smollm2_gguf, gsm8k_dir, tmp_path):
    """PROMPT_TOKENS["mtpsd_gsm8k_cot"] is the longest of the 1,319 prompts as lm-eval builds
    them (8-shot CoT, multi-turn chat template), in SmolLM2's tokens. Every prompt is the same
    exemplars around its question, so the prompts of the 20 longest questions are built (the
    whole split takes minutes; its result was the same)."""
    from transformers import AutoTokenizer

    from mtpsd.io import atomic_write_jsonl, read_jsonl

    tok = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    rows = read_jsonl(gsm8k_dir / "test.jsonl")
    rows.sort(key=lambda r: -len(tok(r["question"], add_special_tokens=False)["input_ids"]))
    atomic_write_jsonl(tmp_path / "longest.jsonl", rows[:20])
    n = em.measure_longest_prompt("mtpsd_gsm8k_cot", tok, data_file=tmp_path / "longest.jsonl", chat_template=True)
    assert n == em.PROMPT_TOKENS["mtpsd_gsm8k_cot"]


@pytest.mark.slow
def test_plan_against_measured_cpu_peak(tmp_path):
    """Qwen3-4B's exact config at 2 layers (real vocabulary), float32, batch 4, 600-token
    prompts, budget 4000, static k=4: the engine allocates the plan's rows, slots and cache bytes;
    the measured peak RSS increase of the call stays below the plan's KV cache + pass, and
    equals it within 10% once the math kernel's attention scores are taken out (on CPU sdpa
    runs the flash kernel, which never holds them)."""
    arch = tmp_path / "qwen3_4b_2layers.json"
    data = json.loads((ARCH / "qwen3_4b.json").read_text())
    arch.write_text(json.dumps(data | {"num_hidden_layers": 2}))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tests.eval_memory_probe", str(arch), "2", "4", "600", "4000", "4"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    m = em.eval_shape(arch)
    s = em.EvalSetup(task="t", budget=4000, prompt_tokens=600, k=4, batch=4, device="cpu")
    plan = em.plan_eval_memory(m, s)
    assert (got["rows"], got["slots"], got["cache_bytes"]) == (s.rows, s.slots, plan.parts["KV cache"])
    assert plan.parts["weights"] == m.params * 4
    kind, work = em.pass_working_set(m, s)
    assert kind == "first pass"
    beside_weights = plan.allocated - plan.parts["weights"]
    scores = s.rows * m.heads * (512 + s.k - 1) * 768 * 4  # the first pass: 603 slots -> 768
    assert got["increase"] <= beside_weights
    assert beside_weights - scores == pytest.approx(got["increase"], rel=0.10), (got, plan.parts)
