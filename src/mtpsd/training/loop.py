"""Self-distillation training loop (method.md sections 2-4), resumable, with accelerate.

One optimizer step = ``global_batch_size`` texts, split into micro-batches of
``micro_batch_size`` (gradient accumulation; with P processes each takes every P-th
micro-batch). The loss of a step is the mean over all its supervised positions:
micro-batch ``i`` contributes ``loss_i * n_i / n_total`` (``n`` = loss terms), so the
step's gradient does not depend on how the batch is split. AdamW (``train.optimizer``, training.optim),
``lr_s = lr * min(1, (s + 1) / warmup_steps)`` (linear warm-up, then constant).

Precision (``train.precision``): ``mixed`` = float32 on CPU; on GPU (dtype auto/bfloat16)
float32 master weights with bf16 autocast (accelerate ``mixed_precision="bf16"``) and a bf16
teacher. ``pure`` = the student's weights and gradients in model.dtype too (bf16: the
one-GPU recipe, config/paper_1gpu.yaml, with ``train.optimizer: adamw8bit``; training.optim).
Before loading a weight the run's memory plan (training.memory_plan) is checked against the
GPU's free memory (or ``gpu_memory`` GiB) and the run stops with settings that would fit.

Options (``train`` config): ``attn_implementation`` sdpa | flex_attention (``mtpsd.flex``;
CUDA only, sdpa elsewhere); ``gradient_checkpointing`` (HF activation checkpointing on the
student, non-reentrant; the same loss and gradients). Multi-GPU: the command runs under
``accelerate launch`` (``mtpsd.training.launch``); under FSDP the student is sharded by
``accelerator.prepare`` and the frozen teacher is replicated in bf16 on every GPU.

Checkpoints (``checkpoint_dir/step_{N:06d}/``), in the training dtype (float32 master
weights, or bf16 with ``precision: pure``); what is kept is what the evaluation needs:

- at the steps of ``eval.checkpoint_steps``: a plain HF model + tokenizer (kept);
- every ``checkpoint_every`` steps and at the last step: the resume state, ``state/``
  (weights, optimizer, scheduler, RNG: ``accelerator.save_state``) plus ``trainer_state.pt``
  (step, data cursor, layout-sampler RNG, metrics so far). The two newest are kept; older
  step directories without an evaluation snapshot are deleted.

A step directory is written under a temporary name, with a manifest of its files, and renamed
when complete, and older resume states are deleted only after that, so a kill (even mid-save)
loses nothing: a restarted run resumes from the newest good checkpoint and continues exactly;
a damaged one is skipped for the one before, a full disk stops the run with one line
(training.resume). The final model is ``out`` (training.memory_plan.disk_plan sizes all of it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from mtpsd.checkpoint import mtp_token_id_of, resolve_device, resolve_dtype
from mtpsd.errors import MtpsdError
from mtpsd.flex import resolve_attn_implementation
from mtpsd.io import atomic_write_json, atomic_write_jsonl, provenance, read_jsonl
from mtpsd.layout import batch_ends, build_layout, default_num_regions, sample_batch_layout
from mtpsd.mtp_token import save_model_dir
from mtpsd.objective import mtp_loss_from_layout
from mtpsd.training.memory_plan import check_run_fits
from mtpsd.training.metrics import MetricsWindow
from mtpsd.training.optim import build_optimizer, keep_full_precision_state
from mtpsd.training.resume import load_resume_state, save_checkpoint


class TextStream:
    """Training texts in a seeded order, epoch after epoch; ``cursor`` = (epoch, index)."""

    def __init__(self, rows: list[dict], seed: int):
        self.rows, self.seed, self.epoch, self.index = rows, seed, 0, 0
        self._order = self._perm()

    def _perm(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(len(self.rows), generator=g).tolist()

    def take(self, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            if self.index == len(self.rows):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._perm()
            out.append(self.rows[self._order[self.index]])
            self.index += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load(self, st: dict) -> None:
        self.epoch, self.index = st["epoch"], st["index"]
        self._order = self._perm()


def _encode_batch(tok, rows: list[dict], cfg, pad_id: int):
    """(input_ids (B, N), attention_mask (B, N)), right-padded."""
    from mtpsd.data.prompts import encode_example

    seqs = [encode_example(tok, r["question"], r["answer"], chat_template=cfg.model.chat_template,
                           max_length=cfg.train.max_length) for r in rows]
    N = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), N), pad_id, dtype=torch.long)
    am = torch.zeros((len(seqs), N), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        am[i, : len(s)] = 1
    return ids, am


def train_mtp(cfg, *, init: str | Path, train_path: str | Path, checkpoint_dir: str | Path,
              out: str | Path, metrics_path: str | Path, device: str | None = None,
              stop_after: int | None = None, progress: bool = True,
              gpu_memory: float | None = None) -> list[dict]:
    """Train from ``init`` (the step-0 MTP checkpoint); return the metrics rows.

    ``stop_after``: return after that many optimizer steps without writing ``out``
    (what a killed job leaves behind; used to test resuming). ``gpu_memory``: GiB per
    device the memory plan must fit (default: the free memory of a CUDA device; no check on CPU).
    """
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tc = cfg.train
    dev = resolve_device(device)
    dtype = resolve_dtype(cfg.model.dtype, dev)
    low = dtype == torch.bfloat16 and tc.precision == "mixed"  # autocast over float32 master weights
    accelerator = Accelerator(mixed_precision="bf16" if low else "no", cpu=dev.type == "cpu")
    init, checkpoint_dir = Path(init), Path(checkpoint_dir)
    if not (init / "config.json").is_file():
        raise MtpsdError(f"{init}: not a checkpoint directory (run `mtpsd add-mtp-token` first)")
    from accelerate.utils import DistributedType, set_seed

    set_seed(tc.seed)  # global RNGs: adamw8bit's stochastic rounding draws from them (saved in state/)

    check_run_fits(cfg, init, device=accelerator.device, gpus=accelerator.num_processes,
                   fsdp=accelerator.distributed_type == DistributedType.FSDP, gpu_memory_gib=gpu_memory)
    rows = read_jsonl(train_path, required=("question", "answer"))
    if not rows:
        raise MtpsdError(f"{train_path}: no training rows")
    P = accelerator.num_processes
    if tc.global_batch_size % (tc.micro_batch_size * P):
        raise MtpsdError(f"train.global_batch_size={tc.global_batch_size} must be a multiple of "
                         f"micro_batch_size x processes = {tc.micro_batch_size * P}")
    tok = AutoTokenizer.from_pretrained(init)
    master = dtype if tc.precision == "pure" or dtype == torch.float64 else torch.float32
    attn = resolve_attn_implementation(tc.attn_implementation, accelerator.device)
    student = AutoModelForCausalLM.from_pretrained(init, dtype=master, attn_implementation=attn)
    with _full_weights_on_every_rank():
        teacher = AutoModelForCausalLM.from_pretrained(init, dtype=dtype, attn_implementation=attn)
    teacher.requires_grad_(False).eval().to(accelerator.device)
    if tc.gradient_checkpointing:
        # non-reentrant: works with frozen inputs (embeddings) and FSDP2
        student.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    mtp_id = mtp_token_id_of(student)
    # every saved checkpoint records its mask among <MTP> inputs: decoding uses the same one
    student.config.mtp_attention = tc.attention
    eos_id, pad_id = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else mtp_id
    n_regions = tc.num_regions or default_num_regions(tc.max_length, tc.k_max)
    student.train()
    optimizer = build_optimizer(student.parameters(), name=tc.optimizer, lr=tc.lr, weight_dtype=master)
    warm = max(tc.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm))
    student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    keep_full_precision_state(optimizer, [accelerator.unwrap_model(student).get_input_embeddings().weight])

    stream, layout_rng = TextStream(rows, tc.seed), torch.Generator().manual_seed(tc.seed)
    step, supervised_total, elapsed0, metrics = 0, 0, 0.0, []
    resumed = load_resume_state(accelerator, checkpoint_dir)  # the newest good one (training.resume)
    if resumed is not None:
        last, st = resumed
        step, supervised_total, elapsed0, metrics = st["step"], st["supervised_tokens"], st["elapsed_s"], st["metrics"]
        stream.load(st["data"])
        layout_rng.set_state(st["layout_rng"])
        accelerator.print(f"resuming from {last} (step {step})")
    t_start = time.perf_counter()
    n_micro = tc.global_batch_size // tc.micro_batch_size
    keep_steps = set(cfg.eval.checkpoint_steps)  # evaluation snapshots (workflow: step{N})
    window = MetricsWindow(tc.k_max)
    micro_seen, warned_regions = 0, False
    bar = tqdm(total=tc.steps, initial=step, desc="train-mtp", disable=not (progress and accelerator.is_main_process))
    while step < tc.steps and (stop_after is None or step < stop_after):
        # every process builds every layout (cheap) so all agree on n_total; it runs its share
        layouts = []
        for _ in range(n_micro):
            ids, am = _encode_batch(tok, stream.take(tc.micro_batch_size), cfg, pad_id)
            k, pos = sample_batch_layout(am.sum(1).tolist(), k_max=tc.k_max, num_regions=n_regions,
                                         random_k=tc.random_k, generator=layout_rng,
                                         ends=batch_ends(ids, am, eos_id))
            layouts.append((k, build_layout(ids, pos, k=k, mtp_token_id=mtp_id, attention=tc.attention,
                                            attention_mask=am, eos_token_id=eos_id)))
        n_total = max(sum(lay.num_terms(tc.prefix_loss) for _, lay in layouts), 1)
        step_loss = 0.0
        mine = layouts[accelerator.process_index::P]
        for i, (k, lay) in enumerate(mine):
            lay = _to(lay, accelerator.device)
            ctx = accelerator.no_sync(student) if i < len(mine) - 1 else contextlib.nullcontext()
            with ctx:
                res = mtp_loss_from_layout(student, teacher, lay, teacher_mode=tc.teacher_mode,
                                           prefix_loss=tc.prefix_loss, tokenizer_size=len(tok),
                                           mtp_token_id=mtp_id)
                share = res.loss * (lay.num_terms(tc.prefix_loss) / n_total)
                accelerator.backward(share * P)  # DDP/FSDP average over processes
            step_loss += float(share.detach())
            window.add_micro(res, k)
            del res  # its (S, V) logits would otherwise live through the next forward
            micro_seen += 1
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        supervised_total += sum(lay.num_supervised for _, lay in layouts)
        window.add_step(float(accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "sum")))
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        elapsed = elapsed0 + time.perf_counter() - t_start
        if step % tc.log_every == 0 or step == tc.steps:
            metrics.append(window.row(step=step, lr=float(scheduler.get_last_lr()[0]), supervised_total=supervised_total,
                                      elapsed=elapsed, micro_batches=micro_seen))
            window.reset()
            micro_seen = 0
            kept = metrics[-1]["regions_kept"]
            if kept is not None and kept < 0.5 and not warned_regions and accelerator.is_main_process:
                warned_regions = True
                warnings.warn(f"only {kept:.0%} of the sampled MTP regions were kept (the rest fell after "
                              "the end of their text): check max_length, num_regions and that texts "
                              "end in EOS", stacklevel=1)
            if accelerator.is_main_process:
                atomic_write_jsonl(metrics_path, metrics)
        resume, snapshot = step % tc.checkpoint_every == 0 or step == tc.steps, step in keep_steps
        if resume or snapshot:
            state = {"step": step, "supervised_tokens": supervised_total, "elapsed_s": elapsed,
                     "data": stream.state(), "layout_rng": layout_rng.get_state(), "metrics": metrics}
            save_checkpoint(accelerator, student, tok, checkpoint_dir / f"step_{step:06d}",
                            state if resume else None, snapshot=snapshot, keep_steps=keep_steps)
    bar.close()
    if stop_after is not None and step < tc.steps:
        return metrics
    state_dict = accelerator.get_state_dict(student)  # collective under FSDP
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(student)
        model.config.mtpsd_train_steps = step
        if tc.gradient_checkpointing:
            model.activation_checkpointing_disable()  # not a property of the saved checkpoint
        save_model_dir(_StateDictModel(model, state_dict), tok, out)
        atomic_write_json(Path(out) / "train_summary.json", {
            "steps": step, "supervised_tokens": supervised_total, "final": metrics[-1] if metrics else None,
            "attn_implementation": attn, "processes": P,
            "provenance": provenance(seed=tc.seed, config=cfg)})
    accelerator.wait_for_everyone()
    return metrics


@contextlib.contextmanager
def _full_weights_on_every_rank():
    """Load a model with real weights on every rank, even under FSDP cpu-RAM-efficient loading.

    With ``fsdp_cpu_ram_efficient_loading`` transformers gives ranks other than 0 empty
    weights and relies on FSDP to broadcast rank 0's. That is right for the student
    (``accelerator.prepare`` shards it) but the frozen teacher is *not* prepared: it is kept
    replicated in bf16 on every GPU (no all-gather per forward; 16 GB for an 8B model,
    config/README.md), so it must be loaded fully on each rank.
    """
    import os

    key = "FSDP_CPU_RAM_EFFICIENT_LOADING"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


class _StateDictModel:
    """``save_pretrained`` with an explicit (gathered) state dict, for ``save_model_dir``."""

    def __init__(self, model, state_dict):
        self.model, self.state_dict = model, state_dict

    def save_pretrained(self, path):
        self.model.save_pretrained(path, state_dict=self.state_dict)


def _to(layout, device):
    """The layout's tensors on ``device``."""
    if layout.input_ids.device == torch.device(device):
        return layout
    return dataclasses.replace(layout, **{f.name: getattr(layout, f.name).to(device)
                                          for f in dataclasses.fields(layout)
                                          if isinstance(getattr(layout, f.name), torch.Tensor)})
