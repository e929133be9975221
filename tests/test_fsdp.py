"""FSDP2 training on two CPU processes (gloo), launched as users launch it:

    accelerate launch --config_file config/accelerate/fsdp.yaml --num_processes 2 -m mtpsd train-mtp ... --device cpu

(the paper's FSDP config file itself; the process count on the command line, the CPU switch is
train-mtp's ``--device cpu``, which makes accelerate use gloo; mtpsd.training.distributed turns
FSDP on there). The tiny default's model (width 96, 4 layers, tied embeddings), untrained;
4 micro-batches per optimizer step, 2 per process (gradient accumulation), gradient
checkpointing on, the frozen teacher replicated on both processes (as the paper profile keeps it).

Measured on a 2-core CPU (torch 2.13, accelerate 1.15), against the same run in one process
with the same global batch: losses within 1.0e-7 (relative; 4.8e-7 absolute), every weight within
6.9e-7 after 6 steps (float32, weights of magnitude up to 1.0). What differs is the order of the
gradient sums (one process adds its four micro-batches' gradients in turn; under FSDP each process
reduce-scatters each of its two micro-batches, which averages it with the other process's, and
adds the sharded results) and the loss's all-reduce. A run killed (SIGKILL to the launcher and
both workers) after its first resume state resumes from its newest checkpoint and ends with the
uninterrupted FSDP run's weights and losses, bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from mtpsd.config import Config, EvalConfig, ModelConfig, TrainConfig

from .conftest import REPO, make_train_dir
from .test_train_step import _train, cli_env, read_metrics, train_command

ACCELERATE = Path(sys.executable).with_name("accelerate")
FSDP_YAML = REPO / "config" / "accelerate" / "fsdp.yaml"
# the port: a free one (0), so that tests running side by side do not meet on accelerate's 29500
FSDP_LAUNCH_2_CPU = [str(ACCELERATE), "launch", "--config_file", str(FSDP_YAML), "--num_processes", "2",
                     "--main_process_port", "0"]
FSDP_ON_2_CPU_PROCESSES = [*FSDP_LAUNCH_2_CPU, "-m", "mtpsd"]
LOSS_RTOL = 1e-5  # stated tolerance, FSDP vs one process (measured: 1.0e-7)
WEIGHT_ATOL = 1e-5  # stated tolerance on every weight after 6 steps (measured: 6.9e-7)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torchrun with gloo on CPU (Linux)")


def _cfg(**train):
    base = dict(k_max=4, max_length=160, num_regions=32, lr=1e-3, warmup_steps=2, steps=6, global_batch_size=8,
                micro_batch_size=2, checkpoint_every=2, log_every=1, seed=0, gradient_checkpointing=True)
    return Config(model=ModelConfig(dtype="float32"), train=TrainConfig(**{**base, **train}),
                  eval=EvalConfig(checkpoint_steps=[3]))


def _launch(cfg, root, name, **popen):
    """`train-mtp` under FSDP on 2 CPU processes into ``root/name`` (a Popen with ``popen``, else run to the end)."""
    d = root / name
    d.mkdir(exist_ok=True)
    (d / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    cmd = train_command(FSDP_ON_2_CPU_PROCESSES, d / "cfg.json", root, d)
    if popen:
        return subprocess.Popen(cmd, cwd=d, env=cli_env(), **popen)
    proc = subprocess.run(cmd, cwd=d, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(path) / "model.safetensors")


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 6 steps in one process and under FSDP on 2 CPU processes."""
    root = make_train_dir(tmp_path_factory.mktemp("fsdp"), n_train=40, tiny_default=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process runs
    try:
        one = _train(root, "one-process", _cfg())
    finally:
        torch.set_num_threads(threads)
    _launch(_cfg(), root, "fsdp")
    return root, one


@pytest.mark.slow
@linux_only
def test_fsdp_on_two_cpu_processes_equals_one_process(runs):
    root, one = runs
    d = root / "fsdp"
    summary = json.loads((d / "checkpoint" / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["distributed_type"] == "FSDP"
    # each process wrote its own shard of the weights and of the optimizer state (sharded resume state)
    state = d / "checkpoints" / "step_000006" / "state"
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert sorted(p.name for p in (state / part).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (state / "model.safetensors").exists()  # what DDP or one process would write
    two = read_metrics(d)
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in two] == [r["lr"] for r in one]
    assert [r["supervised_tokens"] for r in two] == [r["supervised_tokens"] for r in one]
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=LOSS_RTOL)
    # full HF checkpoints: the evaluation snapshot of step 3 and the final model, the keys of one process's
    for rel in ("checkpoints/step_000003", "checkpoint"):
        a, b = _weights(root / "one-process" / rel), _weights(d / rel)
        assert "lm_head.weight" not in b  # tied to the input embedding: saved once
        assert _max_diff(a, b) <= WEIGHT_ATOL, rel


@pytest.mark.slow
@linux_only
def test_fsdp_checkpoint_loads_in_one_process_and_decodes(runs):
    """The FSDP run's final checkpoint decodes in one process as the one-process run's does."""
    from mtpsd.checkpoint import load_checkpoint, mtp_token_id_of
    from mtpsd.data.prompts import encode_prompt
    from mtpsd.decoding import generate
    from mtpsd.io import read_jsonl

    root, _ = runs
    question = read_jsonl(root / "train.jsonl")[0]["question"]
    out = {}
    for name in ("one-process", "fsdp"):
        model, tok = load_checkpoint(root / name / "checkpoint", dtype="float32", device="cpu")
        assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
        ids = torch.tensor([encode_prompt(tok, question, chat_template=False)])
        out[name] = [generate(model, ids, mtp_token_id=mtp_token_id_of(model), strategy=s, k=4, tau=0.9,
                              max_new_tokens=24) for s in ("static", "confadapt")]
    for a, b in zip(out["one-process"], out["fsdp"]):
        assert b.tokens and b.tokens == a.tokens and b.chunk_sizes == a.chunk_sizes


@pytest.mark.slow
@linux_only
def test_a_killed_fsdp_run_resumes_to_the_uninterrupted_weights(runs):
    """SIGKILL to the launcher and both workers once the first resume state (step 2) is on disk, the
    same command again: it resumes from the newest checkpoint and ends where the uninterrupted run ended."""
    root, _ = runs
    d = root / "killed"
    proc = _launch(_cfg(), root, "killed", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (d / "checkpoints" / "step_000002").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    # torchrun's workers run in sessions of their own: a scheduler kills the job's every process
    launcher = psutil.Process(proc.pid)
    every = [launcher, *launcher.children(recursive=True)]
    assert len(every) >= 3  # the launcher and its two workers
    for p in every:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(every, timeout=60)
    proc.wait(timeout=60)
    assert not (d / "checkpoint").exists()  # killed mid-training, before the final model
    newest = max(p.name for p in (d / "checkpoints").glob("step_*"))
    resumed = _launch(_cfg(), root, "killed")
    assert f"resuming from {d / 'checkpoints' / newest}" in resumed.stdout + resumed.stderr
    keys = ("step", "loss", "lr", "supervised_tokens")
    assert [{k: r[k] for k in keys} for r in read_metrics(d)] == [{k: r[k] for k in keys}
                                                                   for r in read_metrics(root / "fsdp")]
    a, b = _weights(root / "fsdp" / "checkpoint"), _weights(d / "checkpoint")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@linux_only
def test_the_one_gpu_recipe_under_fsdp(runs):
    """bf16 weights, adamw8bit (each process updates its shards: training.optim), checkpointing, under
    FSDP: the losses of the one-process run within 5e-3 (measured 5.5e-4: bf16 compute, and the
    stochastic rounding draws differ per shard); resumed from its step-2 state (the 8-bit states
    through torch.distributed.checkpoint) it ends with the uninterrupted run's weights, bit for bit."""
    root, _ = runs
    # bf16 is emulated on CPU under the pinned numerics: shorter texts than the float32 runs'
    recipe = dict(precision="pure", optimizer="adamw8bit", steps=4, max_length=64, num_regions=8)
    cfg = dataclasses.replace(_cfg(**recipe), model=ModelConfig(dtype="bfloat16"))
    with pytest.warns(UserWarning):  # bf16 on a CPU whose bf16 is emulated (pinned numerics)
        one = _train(root, "recipe-one-process", cfg)
    _launch(cfg, root, "recipe")
    d = root / "recipe"
    assert [r["loss"] for r in read_metrics(d)] == pytest.approx([r["loss"] for r in one], rel=5e-3)
    full = _weights(d / "checkpoint")
    assert all(w.dtype == torch.bfloat16 for w in full.values())
    # as if killed after step 3: the newest resume state is step 2's
    for p in (d / "checkpoints" / "step_000004", d / "checkpoint"):
        shutil.rmtree(p)
    resumed = _launch(cfg, root, "recipe")
    assert f"resuming from {d / 'checkpoints' / 'step_000002'}" in resumed.stdout + resumed.stderr
    again = _weights(d / "checkpoint")
    assert all(torch.equal(full[k], again[k]) for k in full)


def test_accelerate_cpu_flag_runs_one_process_and_train_mtp_says_so(monkeypatch):
    """`accelerate launch --config_file fsdp.yaml --cpu --num_processes 2` takes accelerate's simple
    launcher (one process, no FSDP settings); the environment it gives that process is recognised.
    The launch without --cpu (torchrun: a world size) is not."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env, prepare_simple_launcher_cmd_env

    from mtpsd.training.distributed import cpu_flag_launched_one_process

    def args_of(*flags):
        args = launch_command_parser().parse_args(["--config_file", str(FSDP_YAML), *flags, "-m", "mtpsd", "x"])
        return _validate_launch_command(args)[0]

    args = args_of("--cpu", "--num_processes", "2")
    cmd, env = prepare_simple_launcher_cmd_env(args)
    assert "ACCELERATE_USE_FSDP" not in env and cmd[:2] == [sys.executable, "-m"]  # one process, no torchrun
    for k in ("ACCELERATE_USE_CPU", "MASTER_ADDR", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
        if k in env:
            monkeypatch.setenv(k, env[k])
    assert cpu_flag_launched_one_process()
    args = args_of("--num_processes", "2", "--main_process_port", "0")
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and args.nproc_per_node == "2"
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun gives each of its processes
    assert not cpu_flag_launched_one_process()
