"""A short training segment of the one-GPU recipe on a random-weight model of a paper architecture:
peak memory (overall and at the optimizer step, beside the memory plan), supervised tokens/s (the
memory plan's GPU-hours read this file), host synchronisations per step, and FlexAttention
against sdpa.

    python benchmarks/train_segment.py --arch benchmarks/arch/llama31_8b.json --steps 6 --out train_llama31_8b.json
    python benchmarks/train_segment.py --arch benchmarks/arch/qwen3_4b.json --steps 2 --out /tmp/t.json --cpu

The recipe is config/paper_1gpu.yaml on config/paper.yaml: bf16 weights and gradients
(``precision: pure``), torchao AdamW8bit with stochastic rounding, gradient checkpointing, a
frozen bf16 teacher (a copy of the student at step 0, as in training), micro-batch 8 of N = 160
tokens with M = 5 regions and k ~ U{2..16}, 16 micro-batches per optimizer step (global batch
128). Texts are random token ids (speed and memory do not depend on them). Every step is
``mtpsd.training.loop.train_step``, the step ``mtpsd train-mtp`` runs. The first step (torchao
compiles its update per tensor shape) is not timed; ``seconds_per_sequence`` and the tokens/s come
from the others. Reported beside the plan (``training.memory_plan``) for the same setup:

- ``peak_allocated_gib`` / ``peak_reserved_gib``: ``torch.cuda.max_memory_allocated/reserved`` over
  the segment (plan: ``plan_allocated_gib``, ``plan_peak_gib`` with the CUDA overhead);
- ``peak_optimizer_step_allocated_gib``: the same over the optimizer steps alone (global optimizer
  step hooks reset the peak before each step), against ``plan_optimizer_step_gib``;
- ``host_syncs_per_step``: synchronising CUDA calls per step (``torch.cuda.set_sync_debug_mode``,
  ``mtpsd.training.host_sync.cuda_sync_warnings``; on CPU the dispatch-mode counter);
- ``flex_ms_per_micro_batch`` / ``sdpa_ms_per_micro_batch`` / ``flex_over_sdpa``: forward + backward
  of the loss on the same micro-batches (k = k_max: one shape, compiled once) with each attention
  implementation on the same weights, after one untimed warm-up each (CUDA only: FlexAttention has
  no backward on CPU). Measured last, so a time limit cuts it first.

``--cpu``: the same code on a tiny model of the same family (2 layers, width 64, vocab 512),
float32, micro-batch 2 x 2 accumulation, N = 64, k_max 4: seconds, to check the script runs.
Imports only torch, transformers and mtpsd's training pieces (no lm_eval, datasets, snakemake).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as `mtpsd train-mtp`

import torch  # noqa: E402

GPU = dict(dtype="bfloat16", micro=8, global_batch=128, max_length=160, k_max=16)
CPU = dict(dtype="float32", micro=2, global_batch=4, max_length=64, k_max=4)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=512)


def load_arch(path: str, cpu: bool):
    from transformers import AutoConfig

    data = json.loads(Path(path).read_text())
    if cpu:
        data = {k: v for k, v in data.items() if k not in ("rope_scaling", "bos_token_id", "eos_token_id", "pad_token_id")}
        data.update(TINY)
    cfg = AutoConfig.for_model(**data)
    cfg._attn_implementation = "sdpa"
    return cfg


def build_models(cfg, dtype: torch.dtype, device: torch.device):
    """Random-weight student (train, gradient checkpointing) and its frozen copy as teacher."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        student = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    teacher = copy.deepcopy(student).requires_grad_(False).eval()
    student.train()
    student.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return student, teacher


def micro_batches(n: int, *, vocab: int, mtp_id: int, micro: int, N: int, k_max: int, seed: int = 0,
                  random_k: bool = True):
    """``n`` ``(k, layout)`` of random texts, built on the host as the training loop builds them."""
    from mtpsd.layout import build_layout, default_num_regions, sample_batch_layout

    g = torch.Generator().manual_seed(seed)
    M = default_num_regions(N, k_max)
    out = []
    for _ in range(n):
        ids = torch.randint(0, mtp_id, (micro, N), generator=g)
        k, pos = sample_batch_layout([N] * micro, k_max=k_max, num_regions=M, random_k=random_k, generator=g)
        out.append((k, build_layout(ids, pos, k=k, mtp_token_id=mtp_id)))
    return out


def plan_for(cfg, p: dict, device: str):
    """The memory plan of the same setup (training.memory_plan)."""
    from mtpsd.layout import default_num_regions
    from mtpsd.training import memory_plan as mp

    shape = mp.shape_of_config(cfg, "segment")
    setup = mp.Setup(device=device, compute_dtype=p["dtype"], precision="pure", optimizer="adamw8bit",
                     gradient_checkpointing=True, micro_batch_size=p["micro"], global_batch_size=p["global_batch"],
                     max_length=p["max_length"], num_regions=default_num_regions(p["max_length"], p["k_max"]),
                     k_max=p["k_max"])
    return shape, mp.plan_memory(shape, setup)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _optimizer_step_peaks(device, peaks: dict):
    """Global optimizer step hooks: the allocated peak inside every optimizer step (CUDA), and the
    segment's overall allocated/reserved peaks (``reset_peak_memory_stats`` before each step
    would lose them)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    if device.type != "cuda":
        return []

    def keep_overall():
        peaks["allocated"] = max(peaks["allocated"], torch.cuda.max_memory_allocated())
        peaks["reserved"] = max(peaks["reserved"], torch.cuda.max_memory_reserved())

    def pre(*_):
        keep_overall()
        torch.cuda.reset_peak_memory_stats()

    def post(*_):
        peaks["optimizer_step"] = max(peaks["optimizer_step"], torch.cuda.max_memory_allocated())
        keep_overall()

    return [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]


def run(args, write=lambda rec: None) -> dict:
    from accelerate import Accelerator

    from mtpsd.config import TrainConfig
    from mtpsd.training.host_sync import HostSyncCounter, cuda_sync_warnings
    from mtpsd.training.loop import train_step
    from mtpsd.training.metrics import MetricsWindow
    from mtpsd.training.optim import build_optimizer, keep_full_precision_state

    cpu = args.cpu
    if not cpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device (use --cpu for the tiny CPU mode)")
    p = CPU if cpu else GPU
    device = torch.device("cpu" if cpu else "cuda")
    dtype = getattr(torch, p["dtype"])
    cfg = load_arch(args.arch, cpu)
    shape, plan = plan_for(cfg, p, device.type)
    student, teacher = build_models(cfg, dtype, device)
    vocab = student.get_input_embeddings().weight.shape[0]
    mtp_id = vocab - 1  # any id: random weights, so the <MTP> row is as good as any
    opt = build_optimizer(student.parameters(), name="adamw8bit", lr=1e-5, weight_dtype=dtype)
    keep_full_precision_state(opt, [student.get_input_embeddings().weight])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 2000))
    accelerator = Accelerator(cpu=cpu, step_scheduler_with_optimizer=False)  # precision pure: no autocast
    n_micro = p["global_batch"] // p["micro"]
    tc = TrainConfig(k_max=p["k_max"], max_length=p["max_length"], micro_batch_size=p["micro"],
                     global_batch_size=p["global_batch"], gradient_checkpointing=True, precision="pure",
                     optimizer="adamw8bit")
    window = MetricsWindow(p["k_max"])
    batches = micro_batches(n_micro * args.steps, vocab=vocab, mtp_id=mtp_id, micro=p["micro"], N=p["max_length"],
                            k_max=p["k_max"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, supervised, losses, syncs = [], [], [], []
    peaks = {"allocated": 0, "reserved": 0, "optimizer_step": 0}
    hooks = _optimizer_step_peaks(device, peaks)
    extra = {}
    for step in range(args.steps):
        chunk = batches[step * n_micro:(step + 1) * n_micro]
        _sync(device)
        t0 = time.perf_counter()
        if device.type == "cuda":
            with cuda_sync_warnings() as found:
                train_step(accelerator, student, teacher, opt, sched, chunk, tc=tc, tokenizer_size=vocab,
                           mtp_token_id=mtp_id, window=window)
        else:
            with HostSyncCounter(optimizers=[opt]) as counter:
                train_step(accelerator, student, teacher, opt, sched, chunk, tc=tc, tokenizer_size=vocab,
                           mtp_token_id=mtp_id, window=window)
            found = counter.calls
        _sync(device)
        times.append(time.perf_counter() - t0)
        syncs.append(len(found))
        extra["host_sync_calls_last_step"] = sorted({str(f) for f in found})[:10]
        row = window.row(step=step + 1, lr=0.0, supervised_total=0, elapsed=0.0, micro_batches=n_micro)
        window.reset()
        supervised.append(sum(lay.num_supervised for _, lay in chunk))
        losses.append(row["loss"])
        print(f"step {step + 1}/{args.steps}: {times[-1]:.2f} s, loss {losses[-1]:.4f}, host syncs {syncs[-1]}", flush=True)
        extra.update(host_syncs_per_step=syncs, peaks=peaks)
        write(_record(args, cpu, device, shape, plan, p, times, supervised, losses, extra))  # a time limit keeps these
    for h in hooks:
        h.remove()
    if args.flex_micro_batches:
        extra.update(flex_vs_sdpa(student, teacher, cfg, p, vocab=vocab, mtp_id=mtp_id, device=device,
                                  n=args.flex_micro_batches))
    return _record(args, cpu, device, shape, plan, p, times, supervised, losses, extra)


def flex_vs_sdpa(student, teacher, cfg, p: dict, *, vocab: int, mtp_id: int, device, n: int) -> dict:
    """Forward + backward of the loss per micro-batch with sdpa and with flex_attention (same weights)."""
    from mtpsd.errors import MtpsdError
    from mtpsd.flex import resolve_attn_implementation
    from mtpsd.objective import mtp_loss_from_layout

    if device.type != "cuda":
        return {"flex_status": "not run: FlexAttention has no backward on CPU"}
    try:
        resolve_attn_implementation("flex_attention", device, cfg)
    except MtpsdError as e:
        return {"flex_status": f"not run: {e}"}
    layouts = [lay.to(device) for _, lay in micro_batches(n + 1, vocab=vocab, mtp_id=mtp_id, micro=p["micro"],
                                                           N=p["max_length"], k_max=p["k_max"], seed=1, random_k=False)]
    out = {}
    for impl in ("sdpa", "flex_attention"):
        for m in (student, teacher):
            m.set_attn_implementation(impl)
        ms = []
        for i, lay in enumerate(layouts):
            _sync(device)
            t0 = time.perf_counter()
            res = mtp_loss_from_layout(student, teacher, lay, teacher_mode="hard", mtp_token_id=mtp_id)
            res.loss.backward()
            del res
            _sync(device)
            if i:  # the first one compiles (flex) / warms up
                ms.append(1e3 * (time.perf_counter() - t0))
            student.zero_grad(set_to_none=True)
        out[f"{'flex' if impl == 'flex_attention' else 'sdpa'}_ms_per_micro_batch"] = sum(ms) / len(ms)
    for m in (student, teacher):
        m.set_attn_implementation("sdpa")
    out["flex_over_sdpa"] = out["flex_ms_per_micro_batch"] / out["sdpa_ms_per_micro_batch"]
    out["flex_status"] = f"ok: {n} micro-batches of k = {p['k_max']} each, after one warm-up"
    return out


GIB = 1024**3


def _record(args, cpu, device, shape, plan, p, times, supervised, losses, extra=None) -> dict:
    """The result JSON from the steps done so far (the first one, with torchao's compilation, untimed)."""
    from mtpsd.training import memory_plan as mp

    extra = dict(extra or {})
    peaks = extra.pop("peaks", None) or {"allocated": 0, "reserved": 0, "optimizer_step": 0}
    timed = slice(1, None) if len(times) > 1 else slice(0, None)
    wall, sup = sum(times[timed]), sum(supervised[timed])
    seqs = len(times[timed]) * p["global_batch"]
    rec = {
        "arch": Path(args.arch).stem, "device": device.type, "tiny_cpu_model": cpu,
        "gpu_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "params": shape.params, "dtype": p["dtype"], "recipe": "precision pure, adamw8bit (torchao, stochastic rounding), "
        "gradient checkpointing, frozen teacher", "micro_batch_size": p["micro"], "global_batch_size": p["global_batch"],
        "max_length": p["max_length"], "k_max": p["k_max"], "steps": len(times), "timed_steps": len(times[timed]),
        "timed_includes_first_step": len(times) == 1,  # torchao's compilation inside: not a speed
        "step_s": times, "losses": losses,
        "seconds_per_sequence": wall / seqs, "supervised_tokens_per_s": sup / wall, "sequences_per_s": seqs / wall,
        "plan_allocated_gib": plan.allocated / GIB, "plan_peak_gib": plan.peak / GIB,
        "plan_optimizer_step_gib": mp.optimizer_step_peak(plan) / GIB,
        "torch": torch.__version__, "python": sys.version.split()[0],
    }
    syncs = extra.pop("host_syncs_per_step", None)
    if syncs:
        rec["host_syncs_per_step"] = syncs
        rec["host_syncs_per_step_max"] = max(syncs[timed] or syncs)
    rec.update(extra)
    if device.type == "cuda":
        rec["peak_allocated_gib"] = max(torch.cuda.max_memory_allocated(), peaks["allocated"]) / GIB
        rec["peak_reserved_gib"] = max(torch.cuda.max_memory_reserved(), peaks["reserved"]) / GIB
        rec["peak_optimizer_step_allocated_gib"] = peaks["optimizer_step"] / GIB
        free, total = torch.cuda.mem_get_info()
        rec["gpu_total_gib"] = total / GIB
        # 100k steps of the paper on this GPU at the measured speed
        rec["gpu_hours_100k_steps"] = 100_000 * p["global_batch"] * rec["seconds_per_sequence"] / 3600
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", required=True, help="HF config.json of the architecture (benchmarks/arch/*.json)")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps (the first is not timed)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--cpu", action="store_true", help="tiny model of the same family on the CPU (seconds)")
    ap.add_argument("--flex-micro-batches", type=int, default=3,
                    help="timed micro-batches per attention implementation for flex vs sdpa (0: skip; CUDA only)")
    args = ap.parse_args(argv)
    try:
        import torchao  # noqa: F401
    except ImportError:
        rec = {"arch": Path(args.arch).stem, "status": "not run: torchao is not installed (pip install torchao==0.18.0)"}
        Path(args.out).write_text(json.dumps(rec, indent=2))
        print(rec["status"], file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(rec):
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(rec, indent=2))
        tmp.replace(out)

    rec = run(args, write)
    write(rec)
    print(json.dumps({k: v for k, v in rec.items() if not isinstance(v, list)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
