"""Training loop: runs, writes checkpoints and metrics, and resumes exactly after a kill."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
import torch

from mtpsd.config import Config, EvalConfig, ModelConfig, TrainConfig

from .conftest import make_train_dir


@pytest.fixture(scope="module")
def init_and_data(tmp_path_factory):
    return make_train_dir(tmp_path_factory.mktemp("train"), n_train=40)


def _cfg(checkpoint_steps=(), dtype="float32", **train):
    base = dict(k_max=4, max_length=64, lr=1e-3, warmup_steps=2, steps=6, global_batch_size=4,
                micro_batch_size=2, checkpoint_every=2, log_every=1, seed=0)
    base.update(train)
    return Config(model=ModelConfig(dtype=dtype), train=TrainConfig(**base),
                  eval=EvalConfig(checkpoint_steps=list(checkpoint_steps)))


def _run(root, name, cfg, **kw):
    from mtpsd.training.loop import train_mtp

    d = root / name
    return train_mtp(cfg, init=root / "mtp_init", train_path=root / "train.jsonl",
                     checkpoint_dir=d / "checkpoints", out=d / "checkpoint",
                     metrics_path=d / "metrics.jsonl", device="cpu", progress=False, **kw), d


KEYS = ("step", "loss", "lr", "supervised_tokens", "student_conf_mean", "student_entropy_mean",
        "agreement", "kl_mean", "k_mean", "regions_kept")


def test_train_and_resume_exactly(init_and_data):
    torch.set_num_threads(1)
    root = init_and_data
    full, d_full = _run(root, "full", _cfg())
    assert [r["step"] for r in full] == [1, 2, 3, 4, 5, 6]
    assert full[0]["lr"] == pytest.approx(1e-3) and full[-1]["lr"] == pytest.approx(1e-3)
    assert all(r["loss"] > 0 and r["tokens_per_s"] > 0 for r in full)
    assert full[-1]["loss"] < full[0]["loss"]  # it learns
    assert len(full[0]["agreement"]) == 4
    assert all(r["regions_kept"] == 1.0 for r in full)  # sampled regions all fit their texts
    # no evaluation snapshots asked for: only the two newest resume states are left (final model: out)
    assert sorted(p.name for p in (d_full / "checkpoints").iterdir()) == ["step_000004", "step_000006"]
    assert not (d_full / "checkpoints" / "step_000006" / "config.json").exists()
    rows = [json.loads(line) for line in (d_full / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]

    # "kill" after 3 steps (last checkpoint at step 2), then resume to the end
    part, d = _run(root, "resumed", _cfg(), stop_after=3)
    assert len(part) == 3 and not (d / "checkpoint").exists()
    resumed, d = _run(root, "resumed", _cfg())
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(full, resumed):
        assert {k: a[k] for k in KEYS} == {k: b[k] for k in KEYS}
    from transformers import AutoModelForCausalLM

    m1 = AutoModelForCausalLM.from_pretrained(d_full / "checkpoint")
    m2 = AutoModelForCausalLM.from_pretrained(d / "checkpoint")
    assert m1.config.mtp_token_id == m2.config.mtp_token_id
    assert m1.config.mtp_attention == "causal"  # decoding reads the training mask from here
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


def test_bda_checkpoint_records_bidirectional_masks(init_and_data):
    """A BDA-trained checkpoint says so in its config, so the decoders use its mask."""
    from transformers import AutoModelForCausalLM

    from mtpsd.decoding.common import mtp_attention

    torch.set_num_threads(1)
    _, d = _run(init_and_data, "bda", _cfg(steps=2, attention="bidirectional"))
    model = AutoModelForCausalLM.from_pretrained(d / "checkpoint", attn_implementation="sdpa")
    assert model.config.mtp_attention == "bidirectional"
    assert mtp_attention(model) == "bidirectional"


def test_train_needs_init(tmp_path, init_and_data):
    from mtpsd.errors import MtpsdError
    from mtpsd.training.loop import train_mtp

    with pytest.raises(MtpsdError, match="add-mtp-token"):
        train_mtp(_cfg(), init=tmp_path / "nope", train_path=init_and_data / "train.jsonl",
                  checkpoint_dir=tmp_path / "c", out=tmp_path / "o", metrics_path=tmp_path / "m.jsonl")


class _Killed(Exception):
    pass


def _params(path):
    from transformers import AutoModelForCausalLM

    return list(AutoModelForCausalLM.from_pretrained(path).parameters())


def test_retention_and_a_kill_mid_save(init_and_data, monkeypatch):
    """Kept: the evaluation snapshots (steps 3 and 4; 3 is no resume step) and the two newest
    resume states (4 and 6); a kill inside the step-4 save (before its rename) resumes from step 2 and
    ends exactly where an uninterrupted run ends."""
    import mtpsd.training.resume as resume

    torch.set_num_threads(1)
    root = init_and_data
    cfg = _cfg(checkpoint_steps=[3, 4])
    full, d_full = _run(root, "keep", cfg)
    ck = d_full / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["step_000003", "step_000004", "step_000006"]
    for step in (3, 4):  # snapshots: HF model + tokenizer; step 4 also the resume state before the newest
        names = {p.name for p in (ck / f"step_{step:06d}").iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
        assert ("state" in names) == (step == 4)
    assert {p.name for p in (ck / "step_000006").iterdir()} == {"state", "trainer_state.pt", "trainer_state.json",
                                                               "manifest.json"}

    real = resume.atomic_write_json
    calls = []

    def dies_at_step_4(path, data):
        if "trainer_state" in str(path) and data.get("step") == 4:
            raise _Killed  # everything of step 4 written except the rename
        calls.append(path)
        return real(path, data)

    monkeypatch.setattr(resume, "atomic_write_json", dies_at_step_4)
    with pytest.raises(_Killed):
        _run(root, "killed", cfg)
    ck = root / "killed" / "checkpoints"
    assert (ck / ".step_000004.tmp").is_dir() and (ck / "step_000002" / "trainer_state.pt").is_file()
    assert not (ck / "step_000004").exists()
    monkeypatch.setattr(resume, "atomic_write_json", real)
    resumed, d = _run(root, "killed", cfg)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(full, resumed):
        assert {k: a[k] for k in KEYS} == {k: b[k] for k in KEYS}
    assert sorted(p.name for p in ck.iterdir()) == ["step_000003", "step_000004", "step_000006"]
    for name in ("checkpoints/step_000003", "checkpoints/step_000004", "checkpoint"):
        for p1, p2 in zip(_params(d_full / name), _params(d / name)):
            assert torch.equal(p1, p2)


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao (the [gpu] extra) not installed")
def test_one_gpu_recipe_resumes_and_saves_bf16(init_and_data):
    """precision pure + adamw8bit (bf16 weights, 8-bit states, stochastic rounding) on CPU:
    checkpoints in bf16 (the training dtype) and an exact resume with the 8-bit optimizer state."""
    torch.set_num_threads(1)
    root = init_and_data
    cfg = _cfg(checkpoint_steps=[2], dtype="bfloat16", precision="pure", optimizer="adamw8bit", steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without native support: slow, still correct
        full, d_full = _run(root, "bf16", cfg)
        part, d = _run(root, "bf16-resumed", cfg, stop_after=3)
        resumed, d = _run(root, "bf16-resumed", cfg)
    saved = json.loads((d_full / "checkpoints" / "step_000002" / "config.json").read_text())
    assert saved["dtype"] == "bfloat16"
    assert json.loads((d_full / "checkpoint" / "config.json").read_text())["dtype"] == "bfloat16"
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full]
    for p1, p2 in zip(_params(d_full / "checkpoint"), _params(d / "checkpoint")):
        assert p1.dtype == torch.bfloat16 and torch.equal(p1, p2)
