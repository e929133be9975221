"""The training step on the way to a GPU: the schedule on several processes, output heads only
on the rows the loss reads, and no host synchronisation inside a step (mtpsd.training.host_sync
says what counts as one and how it is counted on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch

from mtpsd.config import Config, ModelConfig, TrainConfig
from mtpsd.layout import build_layout, sample_batch_layout
from mtpsd.objective import mtp_loss_from_layout
from mtpsd.training.host_sync import HostSyncCounter

from .conftest import REPO, make_tiny_llama, make_train_dir

V, MTP = 64, 63


@pytest.fixture(scope="module")
def init_and_data(tmp_path_factory):
    return make_train_dir(tmp_path_factory.mktemp("train_step"), n_train=24)


def _cfg(**train):
    base = dict(k_max=4, max_length=64, lr=1e-3, warmup_steps=8, steps=3, global_batch_size=4, micro_batch_size=2,
                checkpoint_every=100, log_every=3, seed=0)
    return Config(model=ModelConfig(dtype="float32"), train=TrainConfig(**{**base, **train}))


def _train(root, name, cfg):
    from mtpsd.training.loop import train_mtp

    d = root / name
    return train_mtp(cfg, init=root / "mtp_init", train_path=root / "train.jsonl", checkpoint_dir=d / "checkpoints",
                     out=d / "checkpoint", metrics_path=d / "metrics.jsonl", device="cpu", progress=False)


# ---- `mtpsd train-mtp` as a command on several processes (also tests/test_fsdp.py) ----------

TORCHRUN_2 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mtpsd"]


def cli_env() -> dict:
    """The environment of a launched `mtpsd` command: one thread per process, this checkout's code."""
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}


def train_command(launcher: list[str], cfg_json, root, d) -> list[str]:
    """``launcher`` + `train-mtp` on CPU, from ``root``'s init and data into ``d`` (as :func:`_train` lays it out)."""
    return [*launcher, "train-mtp", "--config", str(cfg_json), "--init", str(root / "mtp_init"), "--train",
            str(root / "train.jsonl"), "--checkpoint-dir", str(d / "checkpoints"), "--out", str(d / "checkpoint"),
            "--metrics", str(d / "metrics.jsonl"), "--device", "cpu"]


def read_metrics(d) -> list[dict]:
    return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]


# ---- counting host synchronisations --------------------------------------------------------

def test_counter_counts_reads_and_value_dependent_shapes():
    x = torch.arange(6.0)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))])
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    with HostSyncCounter(optimizers=[opt]) as c:
        y = x * 2 + 1  # device work: nothing
        y.index_select(0, torch.tensor([1, 2]))
        x.to(x.device)  # device-agnostic move: not counted
        opt.step()  # AdamW reads its host-side step counter: not a synchronisation
    assert c.count == 0
    with HostSyncCounter() as c:
        float(x.sum())
        x.sum().item()
        x.tolist()
        x.cpu()
        x[x > 2]  # boolean mask: the number of rows is only known after reading the mask
        torch.nonzero(x)
        torch.bincount(x.long())
        bool(x.any())
    kinds = Counter(what for what, _ in c.calls)
    assert kinds == {"Tensor.__float__": 1, "Tensor.item": 1, "Tensor.tolist": 1, "Tensor.cpu": 1,
                     "aten::index (bool mask)": 1, "aten::nonzero": 1, "aten::bincount": 1, "Tensor.__bool__": 1}
    with HostSyncCounter() as c, c.paused():
        x.tolist()  # host-side work inside the counted region
    assert c.count == 0


@pytest.mark.parametrize("opts", [dict(), dict(teacher_mode="soft", attention="bidirectional", prefix_loss=True),
                                  dict(teacher_mode="gt")], ids=["hard", "soft-bda-prefix", "gt"])
def test_no_host_synchronisation_in_a_training_step(init_and_data, monkeypatch, opts):
    """Inside train_step (every micro-batch's forward, loss, backward, metrics, the optimizer and
    scheduler steps): nothing. A logging step reads the window's device sums back: 3 reads."""
    import mtpsd.training.loop as loop
    from mtpsd.training.metrics import MetricsWindow

    torch.set_num_threads(1)
    per_step, per_row, real_step, real_row = [], [], loop.train_step, MetricsWindow.row

    def counted_step(accelerator, student, teacher, optimizer, *a, **kw):
        with HostSyncCounter(optimizers=[optimizer], stacks=True) as c:
            n = real_step(accelerator, student, teacher, optimizer, *a, **kw)
        per_step.append(c.calls)
        return n

    def counted_row(self, **kw):
        with HostSyncCounter() as c:
            row = real_row(self, **kw)
        per_row.append(c.count)
        return row

    monkeypatch.setattr(loop, "train_step", counted_step)
    monkeypatch.setattr(MetricsWindow, "row", counted_row)
    rows = _train(init_and_data, f"sync-{'-'.join(map(str, opts.values()))}", _cfg(**opts))
    assert len(per_step) == 3 and per_step == [[], [], []], per_step
    assert per_row == [3] and rows[-1]["step"] == 3 and rows[-1]["loss"] > 0


# ---- output heads on the read rows only -----------------------------------------------------

def _rows_through_heads(student, teacher, lay, **kw):
    seen = {"student": 0, "teacher": 0}
    hooks = [m.get_output_embeddings().register_forward_hook(
        lambda mod, args, out, who=who: seen.__setitem__(who, seen[who] + args[0].reshape(-1, args[0].shape[-1]).shape[0]))
        for who, m in (("student", student), ("teacher", teacher))]
    res = mtp_loss_from_layout(student, teacher, lay, mtp_token_id=MTP, **kw)
    for h in hooks:
        h.remove()
    return seen, res


@pytest.mark.parametrize("prefix", [False, True])
def test_output_heads_see_only_the_read_rows(prefix):
    """On a small packed batch (4 texts of 24 tokens, 3 regions, k = 4) the heads used to see all
    B x L = 132 packed rows each; now the student's sees the S = 48 read-out rows (+ the P prefix rows
    with prefix_loss) and the teacher's the S read-outs: at most 2 S together without prefix_loss."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, MTP, (4, 24), generator=g)
    k, pos = sample_batch_layout([24] * 4, k_max=4, num_regions=3, random_k=False, generator=g)
    lay = build_layout(ids, pos, k=k, mtp_token_id=MTP)
    student, teacher = make_tiny_llama(V, seed=1), make_tiny_llama(V, seed=0)
    seen, res = _rows_through_heads(student, teacher, lay, prefix_loss=prefix)
    S, P, (B, L) = lay.num_supervised, lay.num_prefix, lay.input_ids.shape
    assert (S, B * L) == (48, 132)
    assert seen == {"student": S + (P if prefix else 0), "teacher": S}
    if not prefix:
        assert sum(seen.values()) <= 2 * S
    assert res.student_logits.shape == (S, V)
    # the same logits as the head on every position, read at the read-out rows
    with torch.no_grad():
        full = student(input_ids=lay.input_ids, position_ids=lay.position_ids, attention_mask=lay.attn_mask).logits
    torch.testing.assert_close(res.student_logits, full[lay.readout], rtol=1e-12, atol=1e-12)


# ---- the schedule on several processes ------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torchrun with gloo on CPU (Linux)")
def test_lr_schedule_on_two_processes_equals_one(init_and_data, tmp_path):
    """`mtpsd train-mtp` under torchrun on 2 CPU processes (gloo, DDP) against the same run in one
    process: the lr after every optimizer step is the same (accelerate used to step the scheduler
    once per process: 3.75e-4 instead of 2.5e-4 after step 1 with warm-up 8), and so are the losses."""
    root = init_and_data
    cfg = _cfg(steps=4, log_every=1)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    one = _train(root, "one-process", cfg)
    d = tmp_path / "two"
    proc = subprocess.run(train_command(TORCHRUN_2, tmp_path / "cfg.json", root, d), cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = read_metrics(d)
    summary = json.loads((d / "checkpoint" / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["distributed_type"] == "MULTI_CPU"  # DDP over gloo
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3, 4]
    assert [r["lr"] for r in two] == [r["lr"] for r in one]
    assert [r["lr"] for r in one] == pytest.approx([1e-3 * s / 8 for s in (2, 3, 4, 5)])
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-5)
    assert [r["supervised_tokens"] for r in two] == [r["supervised_tokens"] for r in one]
