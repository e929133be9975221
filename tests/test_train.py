"""Training loop: runs, writes checkpoints and metrics, and resumes exactly after a kill."""

from __future__ import annotations

import json

import pytest
import torch

from mtpsd.config import Config, ModelConfig, TrainConfig

from .conftest import make_train_dir


@pytest.fixture(scope="module")
def init_and_data(tmp_path_factory):
    return make_train_dir(tmp_path_factory.mktemp("train"), n_train=40)


def _cfg(**train):
    base = dict(k_max=4, max_length=64, lr=1e-3, warmup_steps=2, steps=6, global_batch_size=4,
                micro_batch_size=2, checkpoint_every=2, log_every=1, seed=0)
    base.update(train)
    return Config(model=ModelConfig(dtype="float32"), train=TrainConfig(**base))


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
    assert sorted(p.name for p in (d_full / "checkpoints").iterdir()) == ["step_000002", "step_000004", "step_000006"]
    assert not (d_full / "checkpoints" / "step_000002" / "state").exists()  # only newest state kept
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
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


def test_train_needs_init(tmp_path, init_and_data):
    from mtpsd.errors import MtpsdError
    from mtpsd.training.loop import train_mtp

    with pytest.raises(MtpsdError, match="add-mtp-token"):
        train_mtp(_cfg(), init=tmp_path / "nope", train_path=init_and_data / "train.jsonl",
                  checkpoint_dir=tmp_path / "c", out=tmp_path / "o", metrics_path=tmp_path / "m.jsonl")
