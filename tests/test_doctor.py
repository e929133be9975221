"""`mtpsd doctor`: each check with local stand-ins for its probe (no GPU, no network)."""

from __future__ import annotations

import pytest

from mtpsd import doctor
from mtpsd.config import merge_sources
from mtpsd.evaluation.plan import resolve_runs

from .conftest import REPO

GiB = doctor.GiB
CONFIG = REPO / "config"


def _runs(*overlays, extra: dict | None = None):
    import json
    import tempfile

    paths = [str(CONFIG / "config.yaml"), *(str(CONFIG / o) for o in overlays)]
    with tempfile.TemporaryDirectory() as d:
        if extra:  # one more overlay (merged key by key, as --configfile does)
            (p := f"{d}/extra.yaml") and open(p, "w").write(json.dumps(extra))
            paths.append(p)
        return resolve_runs(merge_sources(paths, None))


@pytest.fixture(scope="module")
def published():
    return _runs("paper.yaml", "published.yaml", "general.yaml")  # all seven tasks


@pytest.fixture(scope="module")
def tiny():
    return _runs()


def test_versions_against_pins(monkeypatch):
    monkeypatch.setattr(doctor, "_pins", lambda: {"torch": "2.13.0", "lm-eval": "0.4.13"})
    monkeypatch.setattr(doctor, "_installed", {"torch": "2.13.0+cu128", "lm-eval": "0.4.13"}.get)
    assert doctor.check_versions().ok  # a CUDA build of the tested release
    monkeypatch.setattr(doctor, "_installed", {"torch": "2.11.0", "lm-eval": "0.4.13"}.get)
    c = doctor.check_versions()
    assert c.ok is False and "torch 2.11.0 (tested 2.13.0)" in c.detail
    monkeypatch.setattr(doctor, "_installed", {"torch": "2.13.0"}.get)
    assert "lm-eval missing" in doctor.check_versions().detail


def test_versions_unknown_without_the_package(monkeypatch):
    from importlib.metadata import PackageNotFoundError

    def missing():
        raise PackageNotFoundError("mtpsd")

    monkeypatch.setattr(doctor, "_pins", missing)
    assert doctor.check_versions().ok is None


def test_real_pins_are_this_projects():
    pins = doctor._pins()
    assert pins["torch"] == "2.13.0" and pins["lm-eval"] == "0.4.13" and "pytest" not in pins  # extras excluded


def test_gpu(published, tiny):
    assert doctor.check_gpu([], need_gpu=True).ok is False
    assert doctor.check_gpu([], need_gpu=False).ok is None
    c = doctor.check_gpu([("NVIDIA H100 80GB HBM3", 78.0 * GiB, 79.6 * GiB)], need_gpu=True)
    assert c.ok and "78.0 of 79.6 GiB free" in c.detail


def test_training_memory_paper_and_one_gpu():
    paper = _runs("paper.yaml")
    c = doctor.check_training_memory(paper, 79.6 * GiB)
    assert c.ok is False and "l3-magpie" in c.detail and "config/paper_1gpu.yaml" in c.detail
    qwen = _runs("paper.yaml", "paper_1gpu.yaml", extra={"run_names": ["qwen3-4b"]})
    c = doctor.check_training_memory(qwen, 79.6 * GiB)
    assert c.ok and "qwen3-4b" in c.detail
    assert doctor.check_training_memory(qwen, None).ok is None


def test_evaluation_memory(published):
    c = doctor.check_eval_memory(published, 79.6 * GiB)
    assert c.ok and "aime25:4" in c.detail and "l3-magpie-mtp" in c.detail and "qwen3-4b-mtp" in c.detail
    c = doctor.check_eval_memory(published, 20 * GiB)
    assert c.ok is False and "does not fit even at batch 1" in c.detail
    set32 = _runs("paper.yaml", "published.yaml", "general.yaml", extra={"eval": {"batch_size": 32}})
    c = doctor.check_eval_memory(set32, 79.6 * GiB)
    assert c.ok is False and "eval.batch_size 32 does not fit" in c.detail


def test_disk(published, tiny, monkeypatch, tmp_path):
    from mtpsd.evaluation.memory_plan import eval_shape

    # the published Llama checkpoint pads its vocabulary to 128,384 rows (128,256 in the base's
    # config.json): the plan counts the checkpoint's size for both
    llama = eval_shape(REPO / "benchmarks" / "arch" / "llama31_8b.json").params + 2 * 128 * 4096
    qwen = eval_shape(REPO / "benchmarks" / "arch" / "qwen3_4b.json").params
    needs = doctor.disk_needs(published)
    # hub: base model + published checkpoint in bf16; results: float32 base copy + bf16 checkpoint copy
    assert needs["hub"] == 2 * 2 * (llama + qwen)
    assert needs["results"] == (4 + 2) * (llama + qwen)
    monkeypatch.setattr(doctor, "_disk_free", lambda path: (1, 100 * GiB))  # one file system
    c = doctor.check_disk(published, tmp_path)
    assert c.ok is False and "112 GiB needed, 100 GiB free" in c.detail and "free 12 GiB more" in c.fix
    monkeypatch.setattr(doctor, "_disk_free", lambda path: (hash(str(path)), 70 * GiB))  # two file systems
    assert doctor.check_disk(published, tmp_path).ok
    assert doctor.check_disk(tiny, tmp_path).ok is None


def test_hub(published, tiny, monkeypatch):
    monkeypatch.setattr(doctor, "_hub_reachable", lambda: "HF_HUB_OFFLINE is set")
    c = doctor.check_hub(published)
    assert c.ok is False and "Qwen/Qwen3-4B-Instruct-2507" in c.detail and "HF_HUB_OFFLINE" in c.fix
    monkeypatch.setattr(doctor, "_hub_reachable", lambda: None)
    assert doctor.check_hub(published).ok
    assert doctor.check_hub(tiny).ok is None  # synthetic data, scratch model, local task


def test_token_for_gated_gpqa(published, tiny, monkeypatch):
    monkeypatch.setattr(doctor, "_hf_token", lambda: None)
    c = doctor.check_token(published)
    assert c.ok is False and "Idavidrein/gpqa" in c.detail and "hf auth login" in c.fix
    monkeypatch.setattr(doctor, "_hf_token", lambda: "hf_x")
    monkeypatch.setattr(doctor, "_gated_access", lambda repo, token: "GatedRepoError: 403")
    c = doctor.check_token(published)
    assert c.ok is False and "cannot read Idavidrein/gpqa" in c.detail
    monkeypatch.setattr(doctor, "_gated_access", lambda repo, token: None)
    assert doctor.check_token(published).ok
    assert doctor.check_token(tiny).ok is None


def test_nltk_punkt_tab(published, tiny, monkeypatch):
    seen = []
    monkeypatch.setattr(doctor, "_nltk_has", lambda r: seen.append(r) or False)
    c = doctor.check_nltk(published)
    assert c.ok is False and seen == ["tokenizers/punkt_tab"] and c.fix == "python -m nltk.downloader punkt_tab"
    monkeypatch.setattr(doctor, "_nltk_has", lambda r: True)
    assert doctor.check_nltk(published).ok
    assert doctor.check_nltk(tiny).ok is None


def test_tasks_resolve(published, monkeypatch):
    assert doctor.check_tasks(published).ok  # the real (offline) index
    import mtpsd.evaluation.tasks as tasks

    class Index:
        all_tasks = ["aime25", "mtpsd_gsm8k_cot"]

    monkeypatch.setattr(tasks, "task_manager", lambda: Index())
    c = doctor.check_tasks(published)
    assert c.ok is False and "ifeval" in c.detail and "gpqa_main_cot_n_shot" in c.detail


def _all_probes_ok(monkeypatch):
    monkeypatch.setattr(doctor, "_gpus", lambda: [("NVIDIA H100 80GB HBM3", 79.0 * GiB, 79.6 * GiB)])
    monkeypatch.setattr(doctor, "_disk_free", lambda path: (1, 500 * GiB))
    monkeypatch.setattr(doctor, "_hub_reachable", lambda: None)
    monkeypatch.setattr(doctor, "_hf_token", lambda: "hf_x")
    monkeypatch.setattr(doctor, "_gated_access", lambda repo, token: None)
    monkeypatch.setattr(doctor, "_nltk_has", lambda r: True)


def test_cli_checklist_and_first_thing_to_fix(monkeypatch, capsys, tmp_path):
    from mtpsd.cli import main

    _all_probes_ok(monkeypatch)
    args = ["doctor", "--config", str(CONFIG / "config.yaml"), "--config", str(CONFIG / "paper.yaml"),
            "--config", str(CONFIG / "published.yaml"), "--config", str(CONFIG / "general.yaml"),
            "--out", str(tmp_path / "doctor.txt")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("[ok  ]") == 8 and out.count("[skip]") == 1 and "all checks passed" in out  # nothing trains
    assert (tmp_path / "doctor.txt").read_text() == out
    monkeypatch.setattr(doctor, "_nltk_has", lambda r: False)
    monkeypatch.setattr(doctor, "_hf_token", lambda: None)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1].startswith("first to fix: hub token:")  # the token comes before nltk
    assert "[FAIL] nltk" in out
