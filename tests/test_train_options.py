"""Scale-out options: gradient checkpointing, flex fallback in train_mtp, the accelerate
launch prefix and config files (accelerate 1.15), and importing a published checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mtpsd.config import Config, ModelConfig, TrainConfig
from mtpsd.config.base import ConfigError
from mtpsd.errors import MtpsdError
from mtpsd.layout import build_layout, sample_batch_layout
from mtpsd.objective import mtp_loss_from_layout

from .conftest import REPO, make_tiny_llama, make_train_dir

V, MTP = 64, 63
ACC = REPO / "config" / "accelerate"


# ---- gradient checkpointing -------------------------------------------------------------

def _loss_and_grads(model, teacher, layout):
    model.zero_grad(set_to_none=True)
    res = mtp_loss_from_layout(model, teacher, layout, teacher_mode="hard", mtp_token_id=MTP)
    res.loss.backward()
    return res.loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_gradient_checkpointing_same_loss_and_grads():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, MTP, (2, 48), generator=g)
    k, pos = sample_batch_layout([48, 48], k_max=5, num_regions=4, random_k=True, generator=g)
    lay = build_layout(ids, pos, k=k, mtp_token_id=MTP)
    teacher = make_tiny_llama(V, seed=0)
    student = make_tiny_llama(V, seed=1).train()
    ref_loss, ref_grads = _loss_and_grads(student, teacher, lay)

    calls = []

    def counted(fwd):
        def f(*a, **kw):
            calls.append(1)
            return fwd(*a, **kw)
        return f

    # module hooks do not fire in the recompute, so count the MLPs' forward calls
    for layer in student.model.layers:
        layer.mlp.forward = counted(layer.mlp.forward)
    student.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert student.is_activation_checkpointing
    loss, grads = _loss_and_grads(student, teacher, lay)
    # each decoder layer ran twice: forward, then recomputed in backward
    assert len(calls) == 2 * len(student.model.layers)
    assert loss == ref_loss
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def init_and_data(tmp_path_factory):
    return make_train_dir(tmp_path_factory.mktemp("train_opts"), n_train=24)


def _train(root, name, **train):
    from mtpsd.training.loop import train_mtp

    base = dict(k_max=4, max_length=64, lr=1e-3, warmup_steps=1, steps=2, global_batch_size=4,
                micro_batch_size=2, checkpoint_every=2, log_every=1, seed=0)
    cfg = Config(model=ModelConfig(dtype="float32"), train=TrainConfig(**{**base, **train}))
    d = root / name
    rows = train_mtp(cfg, init=root / "mtp_init", train_path=root / "train.jsonl",
                     checkpoint_dir=d / "checkpoints", out=d / "checkpoint",
                     metrics_path=d / "metrics.jsonl", device="cpu", progress=False)
    return rows, d


def test_train_mtp_options_give_same_run(init_and_data):
    """gradient_checkpointing on, flex requested on CPU (falls back to sdpa): same losses."""
    torch.set_num_threads(1)
    ref, _ = _train(init_and_data, "ref")
    with pytest.warns(UserWarning, match="flex_attention needs a CUDA device"):
        opt, d = _train(init_and_data, "opts", gradient_checkpointing=True, attn_implementation="flex_attention")
    assert [r["step"] for r in opt] == [1, 2]
    for a, b in zip(ref, opt):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    summary = json.loads((d / "checkpoint" / "train_summary.json").read_text())
    assert summary["attn_implementation"] == "sdpa" and summary["processes"] == 1
    saved = json.loads((d / "checkpoint" / "config.json").read_text())
    assert saved["mtp_token_id"] is not None


# ---- launch prefix and accelerate configs --------------------------------------------------


def test_cpu_threads_are_shared_among_trainings_that_run_at_once():
    from mtpsd.training.launch import cpu_threads_per_job

    assert cpu_threads_per_job(2, 1, most=64) == 2  # the default: one training, both cores
    assert cpu_threads_per_job(2, 5, most=64) == 1  # the seeds overlay: one each, two at a time
    assert cpu_threads_per_job(16, 5, most=64) == 3
    assert cpu_threads_per_job(16, 1, most=2) == 2  # capped
    assert cpu_threads_per_job(None, 5, most=64) == 64  # no --cores (cluster): the cap
    with pytest.raises(ValueError):
        cpu_threads_per_job(2, 0, most=2)


def _tc(**kw):
    return TrainConfig(**{"global_batch_size": 128, "micro_batch_size": 8, **kw})


def test_train_command_prefix():
    from mtpsd.training.launch import train_command_prefix, train_command_shell, train_num_gpus

    assert train_command_prefix(Config(train=_tc())) == ["mtpsd"]
    assert train_num_gpus(Config(train=_tc())) == 1
    fsdp = str(ACC / "fsdp.yaml")
    assert train_command_prefix(Config(train=_tc(accelerate_config=fsdp))) == [
        "accelerate", "launch", "--config_file", fsdp, "-m", "mtpsd"]
    assert train_num_gpus(_tc(accelerate_config=fsdp)) == 4
    assert train_num_gpus(_tc(accelerate_config=str(ACC / "single_gpu.yaml"))) == 1
    assert train_command_shell(_tc(accelerate_config=fsdp)) == f"accelerate launch --config_file {fsdp} -m mtpsd"
    with pytest.raises(MtpsdError, match="micro_batch_size x num_processes = 32"):
        train_command_prefix(_tc(global_batch_size=8, micro_batch_size=8, accelerate_config=fsdp))
    with pytest.raises(MtpsdError, match="does not exist"):
        train_command_prefix(_tc(accelerate_config="config/accelerate/nope.yaml"))
    with pytest.raises(ConfigError, match="accelerate_config"):
        _tc(accelerate_config="config/accelerate/fsdp")


def test_bad_accelerate_config(tmp_path):
    from mtpsd.training.launch import train_command_prefix

    bad = tmp_path / "ds.yaml"
    bad.write_text("distributed_type: DEEPSPEED\nnum_processes: 2\n")
    with pytest.raises(MtpsdError, match="distributed_type='DEEPSPEED'"):
        train_command_prefix(_tc(accelerate_config=str(bad)))


@pytest.mark.parametrize("name,dist,n", [("single_gpu.yaml", "NO", 1), ("fsdp.yaml", "FSDP", 4)])
def test_accelerate_configs_load_in_accelerate(name, dist, n):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ACC / name))
    assert cfg.distributed_type.value == dist and cfg.num_processes == n and cfg.mixed_precision == "bf16"


def _tiny_qwen3():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3ForCausalLM(Qwen3Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=8))


@pytest.mark.parametrize("make", [lambda: make_tiny_llama(V), _tiny_qwen3], ids=["llama", "qwen3"])
def test_fsdp_config_wraps_decoder_layers(make, monkeypatch):
    """`accelerate launch` env from fsdp.yaml -> FSDP2 plugin -> one wrap per decoder layer."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(ACC / "fsdp.yaml"), "-m", "mtpsd", "x"])
    args, _, _ = _validate_launch_command(args)
    env = {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("FSDP_", "ACCELERATE_"))}
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.cpu_ram_efficient_loading
    model = make()
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    wrapped = [type(m).__name__ for m in model.modules() if policy(m)]
    assert wrapped == [type(model.model.layers[0]).__name__] * 2


def test_teacher_loads_full_weights_under_fsdp_env(monkeypatch):
    from mtpsd.training.loop import _full_weights_on_every_rank

    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")
    with _full_weights_on_every_rank():
        assert os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "false"
    assert os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"


# ---- reviewer workflow: a published checkpoint ---------------------------------------------

@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from mtpsd.mtp_token import save_model_dir
    from mtpsd.tokenizer_train import train_tokenizer

    root = tmp_path_factory.mktemp("published")
    tok = train_tokenizer(["1 + 2 = 3", "the answer is 4"] * 20, vocab_size=300)
    with_id = make_tiny_llama(len(tok), dtype=torch.float32, mtp_token_id=5)
    save_model_dir(with_id, tok, root / "with_id")
    without = make_tiny_llama(len(tok), dtype=torch.float32)
    without.config.mtp_token_id = None
    save_model_dir(without, tok, root / "without_id")
    return root, tok


def test_import_base_keeps_mtp_token_id(published, tmp_path):
    from mtpsd.mtp_token import import_base

    root, _ = published
    import_base(str(root / "with_id"), tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["mtp_token_id"] == 5


def test_import_checkpoint(published, tmp_path):
    from mtpsd.checkpoint import load_checkpoint, mtp_token_id_of
    from mtpsd.published import import_mtp_checkpoint

    root, tok = published
    info = import_mtp_checkpoint(str(root / "with_id"), tmp_path / "ckpt")
    assert info["mtp_token_id"] == 5
    model, _ = load_checkpoint(tmp_path / "ckpt", dtype="float32", device="cpu")
    assert mtp_token_id_of(model) == 5
    assert "provenance" in json.loads((tmp_path / "ckpt" / "import_info.json").read_text())


def test_import_checkpoint_without_id(published, tmp_path):
    from mtpsd.published import import_mtp_checkpoint

    root, tok = published
    with pytest.raises(MtpsdError, match="has no mtp_token_id"):
        import_mtp_checkpoint(str(root / "without_id"), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    with pytest.raises(MtpsdError, match="not a token of its tokenizer"):
        import_mtp_checkpoint(str(root / "without_id"), tmp_path / "b", mtp_token="<NOPE>")
    name = "<|reserved_0|>"
    info = import_mtp_checkpoint(str(root / "without_id"), tmp_path / "c", mtp_token=name, dtype="bfloat16")
    assert info["mtp_token_id"] == tok.convert_tokens_to_ids(name) and info["mtp_token"] == name
    saved = json.loads((tmp_path / "c" / "config.json").read_text())
    assert saved["mtp_token_id"] == info["mtp_token_id"] and saved["dtype"] == "bfloat16"


def test_import_checkpoint_cli(published, tmp_path, capsys):
    import argparse

    from mtpsd.cli import import_checkpoint as cli

    root, _ = published
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    assert cli.run(p.parse_args(["--source", str(root / "with_id"), "--out", str(tmp_path / "o")])) == 0
    assert "mtp_token_id=5" in capsys.readouterr().out
