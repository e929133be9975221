"""The GPU acceptance script (benchmarks/gpu_check.sh): its pieces, and its CPU mode end to end
(tiny architectures, float32), so the script is known to work before GPU time is spent.
Our engine's rows need ``mtpsd.decoding.engine``; without it those checks skip."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu import cuda_tests, roofline, summary
from benchmarks.gpu.common import (CHECK_JSON, CONFADAPT, CONFADAPT_FULL, HF_EAGER, HF_STATIC, OURS_K1,
                                   ROOFLINE_JSON, SUMMARY_MD, THROUGHPUT_JSON, Deadline)
from benchmarks.gpu.replay import Replayer, truncated_geometric

REPO = Path(__file__).resolve().parents[1]
CPU_BATCHES = ("1", "16", "64")
CPU_NEW_TOKENS = 16


# ---- pieces --------------------------------------------------------------------------------

@pytest.mark.parametrize("mean,k_max", [(3.3, 16), (1.5, 4), (2.0, 8)])
def test_truncated_geometric_has_the_stated_mean(mean, k_max):
    probs, q = truncated_geometric(mean, k_max)
    assert len(probs) == k_max and math.isclose(sum(probs), 1.0)
    assert math.isclose(sum((i + 1) * p for i, p in enumerate(probs)), mean, rel_tol=1e-9)
    assert all(a > b for a, b in zip(probs, probs[1:]))  # geometric: decreasing
    assert 0 < q < 1
    with pytest.raises(ValueError):
        truncated_geometric(9.0, 16)


def test_replayer_is_deterministic_and_capped():
    a, b = Replayer.from_distribution(3.3, 16, rows=8, steps=64), Replayer.from_distribution(3.3, 16, rows=8, steps=64)
    seq = [a(r, s, 16) for r in range(8) for s in range(64)]
    assert seq == [b(r, s, 16) for r in range(8) for s in range(64)]
    assert min(seq) >= 1 and max(seq) <= 16
    assert abs(sum(seq) / len(seq) - 3.3) < 0.5  # 512 draws of a distribution with mean 3.3
    assert all(a(r, s, 2) <= 2 for r in range(8) for s in range(64))  # capped by what the engine offers
    assert a(9, 70, 16) == a(1, 6, 16)  # rows and steps cycle
    assert a.description["mean"] == pytest.approx(3.3)


def test_replayer_from_decode_jsonl(tmp_path):
    path = tmp_path / "decode.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "chunk_sizes": cs}) for i, cs in enumerate([[3, 1, 5], [2]])))
    r = Replayer.from_jsonl(path)
    assert [r(0, s, 16) for s in range(4)] == [3, 1, 5, 3]
    assert [r(1, s, 16) for s in range(2)] == [2, 2]
    assert r(2, 2, 4) == 4  # row 2 replays trace 0; 5 capped at n_cand 4
    assert r.description["mean"] == pytest.approx(11 / 4)
    path.write_text(json.dumps({"id": 0, "tokens": [1]}) + "\n")
    with pytest.raises(ValueError, match="chunk_sizes"):
        Replayer.from_jsonl(path)


def test_ridge_is_the_first_pass_costing_more_than_1_25x_a_one_token_pass():
    rows = [{"batch": 1, "width": w, "ms": ms} for w, ms in [(1, 4.0), (2, 4.1), (4, 4.9), (8, 5.2), (16, 8.0)]]
    rows += [{"batch": 4, "width": w, "ms": ms} for w, ms in [(1, 4.4), (2, 5.2), (4, 6.0)]]
    r = roofline.ridges(rows)
    assert r["one_token_ms"] == 4.0
    assert r["ridge_tokens"] == 8  # 5.2 > 1.25 * 4.0 = 5.0; 4.9 is not
    assert r["ridge_by_batch"]["4"] == {"width1_ms": 4.4, "ridge_tokens_vs_own_width1": 16,
                                        "ridge_tokens_vs_one_token": 8}
    assert roofline.ridges([{"batch": 1, "width": 1, "ms": 1.0}, {"batch": 1, "width": 2, "ms": 1.1}])[
        "ridge_tokens"] is None
    assert all(b * w <= 64 for b, w in roofline.points([1, 16, 64], 64))
    assert (64, 1) in roofline.points([1, 16, 64], 64) and (1, 64) in roofline.points([1], 64)


def test_deadline():
    d = Deadline(0.0)
    assert d.passed() and d.left() < 0
    far = Deadline(1e12)
    assert not far.passed(reserve=100) and far.split(0.5).end < far.end


def test_test_counts_from_verbose_output_when_pytest_was_stopped():
    text = ("tests/test_flex.py::test_flex_loss_and_grads_equal_sdpa_cuda[causal-hard] PASSED   [ 50%]\n"
            "tests/test_flex.py::test_flex_loss_and_grads_equal_sdpa_cuda[bidirectional-soft] FAILED [100%]\n"
            "tests/test_engine_cuda.py::test_x SKIPPED (no CUDA)  [ 10%]\n"
            "FAILED tests/test_flex.py::test_flex_loss_and_grads_equal_sdpa_cuda[bidirectional-soft] - boom\n"
            "ERROR tests/test_engine_cuda.py\n")
    per = cuda_tests._from_verbose(text, list(cuda_tests.FILES))
    assert per["tests/test_flex.py"]["passed"] == 1 and per["tests/test_flex.py"]["failed"] == 1
    assert per["tests/test_flex.py"]["failures"][0]["test"].endswith("[bidirectional-soft]")
    assert per["tests/test_engine_cuda.py"]["skipped"] == 1
    assert per["tests/test_engine_cuda.py"]["errors"] == 1  # a collection error


def test_test_counts_from_junit_include_collection_errors(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text('<testsuites><testsuite name="pytest">'
                   '<testcase classname="" name="tests.test_engine_cuda"><error message="collection failure"/>'
                   '</testcase>'
                   '<testcase classname="tests.test_flex" name="test_a_cuda[x]"><skipped message="no CUDA"/></testcase>'
                   '<testcase classname="tests.test_flex" name="test_b_cuda"><failure message="bad"/></testcase>'
                   '<testcase classname="tests.test_flex" name="test_c_cuda"/>'
                   '</testsuite></testsuites>')
    per = cuda_tests._from_junit(xml, list(cuda_tests.FILES))
    flex, eng = per["tests/test_flex.py"], per["tests/test_engine_cuda.py"]
    assert (flex["passed"], flex["failed"], flex["errors"], flex["skipped"]) == (1, 1, 0, 1)
    assert flex["failures"] == [{"test": "tests/test_flex.py::test_b_cuda", "message": "bad"}]
    assert eng["errors"] == 1 and eng["failures"][0]["test"] == "tests/test_engine_cuda.py (collection)"


def test_targets_table_judges_measured_values_only():
    def cell(**methods):
        return {"methods": {m: v for m, v in methods.items()}}

    tp = {"archs": {
        "llama": {"batches": {"1": cell(**{OURS_K1: {"tokens_per_s": 210.0, "vs_hf_eager": 2.5},
                                           "ours-static-k3": {"vs_ours_k1": 2.8}}),
                              "16": cell(**{CONFADAPT: {"vs_ours_k1": 2.1}})}},
        "qwen": {"batches": {"1": cell(**{OURS_K1: {"tokens_per_s": 300.0}})}}}}
    lines = summary.targets_table(tp, ["llama", "qwen"])[2:]
    assert len(lines) == len(summary.TARGETS) + len(summary.ALSO)

    def row(start):
        (line,) = [x for x in lines if x.startswith(f"| {start}")]
        return line

    assert row("llama, batch 1: ours-k1 tokens/s >= 200 |").endswith("| 210.0 tok/s | yes |")
    assert row("llama, batch 1: ours-k1 x HF eager generate >= 3x |").endswith("| 2.50x | no |")
    assert row("llama, batch 1: ours-static-k3 x our k=1 >= 2.7x |").endswith("| 2.80x | yes |")
    assert row("llama, batch 16: ours-static-k3").endswith("| not measured | not measured |")
    assert row("llama, batch 16: ours-confadapt-replayed x our k=1 >= 2x [replayed acceptance] |").endswith(
        "| 2.10x | yes |")
    assert row("qwen, batch 1: ours-k1 tokens/s >= 350 |").endswith("| 300.0 tok/s | no |")
    assert row("qwen, batch 1: ours-static-k3").endswith("| not measured | - |")  # stated for Llama: not judged


# ---- the CPU mode end to end ----------------------------------------------------------------

@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    # a generous budget: the check's own time guard must not make this test depend on machine load
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu", "--out", str(out),
                           "--budget-s", "300"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _load(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


@pytest.mark.slow
def test_cpu_mode_writes_the_files(cpu_run):
    files = sorted(p.name for p in cpu_run.iterdir())
    assert {CHECK_JSON, THROUGHPUT_JSON, ROOFLINE_JSON, SUMMARY_MD, "gpu_check.log"} <= set(files)
    assert len(files) <= 8 and all((cpu_run / f).is_file() for f in files)
    check = _load(cpu_run, CHECK_JSON)
    assert check["mode"] == "cpu" and check["archs"] == ["tiny_llama", "tiny_qwen3"]
    assert [s["name"] for s in check["sections"]][:3] == ["tests", "decode:tiny_llama", "decode:tiny_qwen3"]
    assert all(s["status"].startswith("ok") for s in check["sections"]), check["sections"]
    t = check["tests"]
    assert "tests/test_flex.py" in t["per_file"] and set(t["totals"]) >= {"passed", "failed", "errors", "skipped"}
    assert sum(t["totals"][k] for k in ("passed", "failed", "errors", "skipped")) >= 2
    assert t["totals"]["failed"] == t["totals"]["errors"] == 0
    text = (cpu_run / SUMMARY_MD).read_text()
    assert "| target | measured | met |" in text and "## Roofline" in text and "CPU mode" in text


@pytest.mark.slow
def test_cpu_mode_roofline(cpu_run):
    rl = _load(cpu_run, ROOFLINE_JSON)
    assert set(rl["archs"]) == {"tiny_llama", "tiny_qwen3"}
    for a in rl["archs"].values():
        assert a["modes"] == ["eager"] and not a["errors"] and not a["skipped"]
        assert {(p["batch"], p["width"]) for p in a["points"]} == set(roofline.points([1, 16, 64], 64))
        assert all(p["ms"] > 0 and p["tokens"] == p["batch"] * p["width"] for p in a["points"])
        assert "ridge_tokens" in a and set(a["ridge_by_batch"]) == {"1", "16", "64"}


@pytest.mark.slow
def test_cpu_mode_hf_baselines(cpu_run):
    tp = _load(cpu_run, THROUGHPUT_JSON)
    assert set(tp["archs"]) == {"tiny_llama", "tiny_qwen3"}
    for a in tp["archs"].values():
        assert a["replay"]["source"] == "distribution" and a["replay"]["mean"] == pytest.approx(3.3)
        assert a["hf_static_compiled"] is False  # CPU: transformers does not compile
        assert set(a["batches"]) == set(CPU_BATCHES)
        for b, cell in a["batches"].items():
            for m in (HF_EAGER, HF_STATIC):
                v = cell["methods"][m]
                assert v["tokens"] == int(b) * CPU_NEW_TOKENS * v["reps"] and v["eff_k"] == 1.0
                assert v["tokens_per_s"] > 0 and v["vs_hf_eager"] > 0
            assert cell["methods"][HF_EAGER]["vs_hf_eager"] == 1.0


@pytest.mark.slow
def test_cpu_mode_engine_rows(cpu_run):
    pytest.importorskip("mtpsd.decoding.engine")
    tp = _load(cpu_run, THROUGHPUT_JSON)
    for a in tp["archs"].values():
        assert not a["errors"]
        for b, cell in a["batches"].items():
            ms = cell["methods"]
            assert not cell["errors"] and cell["engine_captures_while_timed"] == 0
            assert ms[OURS_K1]["vs_ours_k1"] == 1.0 and ms[OURS_K1]["eff_k"] == 1.0
            for k in (2, 3, 4):
                v = ms[f"ours-static-k{k}"]
                assert v["tokens"] == int(b) * CPU_NEW_TOKENS * v["reps"]
                assert v["eff_k"] == pytest.approx(CPU_NEW_TOKENS / math.ceil(CPU_NEW_TOKENS / k))
            full = ms[CONFADAPT_FULL] if a["mask_budget"] is not None else ms[CONFADAPT]
            assert CONFADAPT in ms and full["eff_k"] > 1.5  # replayed chunks, all k_max - 1 masks
