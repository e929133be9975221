"""The one-GPU recipe's optimizer (torchao AdamW8bit) against the reference torch AdamW.

Stated tolerance (config/README.md): a 2-layer Llama of width 256 in float32 trained with the
MTP loss, 5 steps at lr 1e-3: every parameter tensor's total change is within 5% (relative
L2) of AdamW's (measured on CPU: at most 1.3%) and the losses agree to 1e-3 relative. The
tiny training run's loss curve through train_mtp keeps its shape (within 2% per step). bf16
weights: stochastic rounding keeps the mean of updates far below bf16's rounding step, which
plain rounding (torch AdamW on bf16 weights) loses entirely. On CUDA the same tests run the
compiled update (torchao's path on GPUs).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mtpsd.config import Config, ModelConfig, TrainConfig
from mtpsd.errors import MtpsdError
from mtpsd.layout import build_layout, sample_batch_layout
from mtpsd.objective import mtp_loss_from_layout
from mtpsd.training.optim import build_optimizer

from .conftest import make_tiny_llama, make_train_dir

pytest.importorskip("torchao", reason="torchao==0.18.0 (the [gpu] extra) is not installed")

V, MTP = 512, 511
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _batches(n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, MTP, (4, 48), generator=g)
        k, pos = sample_batch_layout([48] * 4, k_max=4, num_regions=4, random_k=True, generator=g)
        lay = build_layout(ids, pos, k=k, mtp_token_id=MTP)
        out.append(dataclasses.replace(lay, **{f.name: getattr(lay, f.name).to(device) for f in dataclasses.fields(lay)
                                               if isinstance(getattr(lay, f.name), torch.Tensor)}))
    return out


def _train(name, steps, device, lr=1e-3):
    """Total change of every parameter and the losses of ``steps`` optimizer steps."""
    teacher = make_tiny_llama(V, hidden_size=256, dtype=torch.float32, seed=0).to(device)
    student = make_tiny_llama(V, hidden_size=256, dtype=torch.float32, seed=0).to(device).train()
    start = [p.detach().clone() for p in student.parameters()]
    opt = build_optimizer(student.parameters(), name=name, lr=lr, weight_dtype=torch.float32,
                          full_precision_state=(student.get_input_embeddings().weight,))
    losses = []
    for lay in _batches(steps, device):
        res = mtp_loss_from_layout(student, teacher, lay, teacher_mode="hard", mtp_token_id=MTP)
        res.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(res.loss.detach()))
    return [p.detach() - s for p, s in zip(student.parameters(), start)], losses, opt, student


@pytest.mark.parametrize("device", DEVICES)
def test_adamw8bit_tracks_adamw(device):
    torch.set_num_threads(1)
    ref, ref_losses, _, _ = _train("adamw", 5, device)
    got, losses, opt, student = _train("adamw8bit", 5, device)
    kinds = {id(p): type(opt.state[p]["exp_avg"]).__name__ for p in student.parameters()}
    emb = student.get_input_embeddings().weight
    assert kinds[id(student.lm_head.weight)] == "OptimState8bit"  # large tensors: 8-bit states
    assert kinds[id(emb)] == "Tensor" and opt.state[emb]["exp_avg"].dtype == torch.float32
    worst = max(float((g - r).norm() / r.norm()) for g, r in zip(got, ref))
    assert worst < 0.05, worst
    assert losses == pytest.approx(ref_losses, rel=1e-3)


def test_bf16_weights_keep_small_updates_with_stochastic_rounding():
    """lr 1e-4 on weights near 1.0: each step is 1/80 of bf16's rounding step there (2^-7)."""
    torch.manual_seed(0)
    steps, lr = 40, 1e-4
    w = torch.nn.Parameter(torch.ones(64, 256, dtype=torch.bfloat16))
    opt = build_optimizer([w], name="adamw8bit", lr=lr, weight_dtype=torch.bfloat16)
    assert opt.bf16_stochastic_round
    plain = torch.nn.Parameter(torch.ones(64, 256, dtype=torch.bfloat16))
    ref = torch.optim.AdamW([plain], lr=lr)  # what the recipe avoids
    for _ in range(steps):
        for p in (w, plain):
            p.grad = torch.ones_like(p)  # Adam's normalized step: ~lr each time
        opt.step()
        ref.step()
    expected = 1.0 - steps * lr * (1 + 0.01)  # Adam steps + decoupled weight decay 0.01
    assert float(plain.detach().float().mean()) == 1.0  # every update rounded away
    assert float(w.detach().float().mean()) == pytest.approx(expected, abs=0.1 * steps * lr)


def test_adamw_on_bf16_weights_is_refused():
    w = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    with pytest.raises(MtpsdError, match="adamw8bit"):
        build_optimizer([w], name="adamw", lr=1e-5, weight_dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def init_and_data(tmp_path_factory):
    return make_train_dir(tmp_path_factory.mktemp("optim"), n_train=40)


def test_tiny_run_loss_curve_keeps_its_shape(init_and_data):
    """train_mtp with the recipe's optimizer: the same loss curve as AdamW, step by step."""
    from mtpsd.training.loop import train_mtp

    torch.set_num_threads(1)
    curves = {}
    for opt in ("adamw", "adamw8bit"):
        cfg = Config(model=ModelConfig(dtype="float32"), train=TrainConfig(
            k_max=4, max_length=64, lr=1e-3, warmup_steps=2, steps=8, global_batch_size=4, micro_batch_size=2,
            checkpoint_every=8, log_every=1, seed=0, optimizer=opt))
        d = init_and_data / opt
        rows = train_mtp(cfg, init=init_and_data / "mtp_init", train_path=init_and_data / "train.jsonl",
                         checkpoint_dir=d / "c", out=d / "o", metrics_path=d / "m.jsonl", device="cpu", progress=False)
        curves[opt] = [r["loss"] for r in rows]
    ref, got = curves["adamw"], curves["adamw8bit"]
    assert got == pytest.approx(ref, rel=0.02)
    assert got[-1] < got[0] and ref[-1] < ref[0]  # both learn
