"""A short training segment of the one-GPU recipe on a random-weight model of a paper architecture:
peak memory and supervised tokens/s (the memory plan's GPU-hours read this file).

    python benchmarks/train_segment.py --arch benchmarks/arch/llama31_8b.json --steps 6 --out train_llama31_8b.json
    python benchmarks/train_segment.py --arch benchmarks/arch/qwen3_4b.json --steps 2 --out /tmp/t.json --cpu

The recipe is config/paper_1gpu.yaml on config/paper.yaml: bf16 weights and gradients
(``precision: pure``), torchao AdamW8bit with stochastic rounding, gradient checkpointing, a
frozen bf16 teacher (a copy of the student at step 0, as in training), micro-batch 8 of N = 160
tokens with M = 5 regions and k ~ U{2..16}, 16 micro-batches per optimizer step (global batch
128). Texts are random token ids (speed and memory do not depend on them). The first step
(torchao compiles its update per tensor shape) is not timed; ``seconds_per_sequence`` and the
tokens/s come from the others. Peak memory: ``torch.cuda.max_memory_allocated/reserved`` over
the whole segment, beside the memory plan's estimate for the same setup.

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


def micro_batches(n: int, *, vocab: int, mtp_id: int, micro: int, N: int, k_max: int, device, seed: int = 0):
    """``n`` packed layouts of random texts, as the training loop builds them."""
    from mtpsd.layout import build_layout, default_num_regions, sample_batch_layout

    g = torch.Generator().manual_seed(seed)
    M = default_num_regions(N, k_max)
    out = []
    for _ in range(n):
        ids = torch.randint(0, mtp_id, (micro, N), generator=g)
        k, pos = sample_batch_layout([N] * micro, k_max=k_max, num_regions=M, random_k=True, generator=g)
        out.append(_to(build_layout(ids, pos, k=k, mtp_token_id=mtp_id), device))
    return out


def _to(layout, device):
    import dataclasses

    return dataclasses.replace(layout, **{f.name: getattr(layout, f.name).to(device) for f in dataclasses.fields(layout)
                                          if isinstance(getattr(layout, f.name), torch.Tensor)})


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


def run(args, write=lambda rec: None) -> dict:
    from mtpsd.objective import mtp_loss_from_layout
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
    n_micro = p["global_batch"] // p["micro"]
    batches = micro_batches(n_micro * args.steps, vocab=vocab, mtp_id=mtp_id, micro=p["micro"], N=p["max_length"],
                            k_max=p["k_max"], device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, supervised, losses = [], [], []
    for step in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, sup = time.perf_counter(), 0
        chunk = batches[step * n_micro:(step + 1) * n_micro]
        n_total = sum(lay.num_supervised for lay in chunk)
        loss_sum = 0.0
        for lay in chunk:
            res = mtp_loss_from_layout(student, teacher, lay, teacher_mode="hard", mtp_token_id=mtp_id)
            share = res.loss * (lay.num_supervised / n_total)
            share.backward()
            loss_sum += float(share.detach())
            sup += lay.num_supervised
            del res, share
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        supervised.append(sup)
        losses.append(loss_sum)
        print(f"step {step + 1}/{args.steps}: {times[-1]:.2f} s, loss {loss_sum:.4f}", flush=True)
        write(_record(args, cpu, device, shape, plan, p, times, supervised, losses))  # a time limit keeps these
    return _record(args, cpu, device, shape, plan, p, times, supervised, losses)


def _record(args, cpu, device, shape, plan, p, times, supervised, losses) -> dict:
    """The result JSON from the steps done so far (the first one, with torchao's compilation, untimed)."""
    timed = slice(1, None) if len(times) > 1 else slice(0, None)
    wall, sup = sum(times[timed]), sum(supervised[timed])
    seqs = len(times[timed]) * p["global_batch"]
    gib = 1024**3
    rec = {
        "arch": Path(args.arch).stem, "device": device.type, "tiny_cpu_model": cpu,
        "gpu_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "params": shape.params, "dtype": p["dtype"], "recipe": "precision pure, adamw8bit (torchao, stochastic rounding), "
        "gradient checkpointing, frozen teacher", "micro_batch_size": p["micro"], "global_batch_size": p["global_batch"],
        "max_length": p["max_length"], "k_max": p["k_max"], "steps": len(times), "timed_steps": len(times[timed]),
        "timed_includes_first_step": len(times) == 1,  # torchao's compilation inside: not a speed
        "step_s": times, "losses": losses,
        "seconds_per_sequence": wall / seqs, "supervised_tokens_per_s": sup / wall, "sequences_per_s": seqs / wall,
        "plan_allocated_gib": plan.allocated / gib, "plan_peak_gib": plan.peak / gib,
        "torch": torch.__version__, "python": sys.version.split()[0],
    }
    if device.type == "cuda":
        rec["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / gib
        rec["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / gib
        free, total = torch.cuda.mem_get_info()
        rec["gpu_total_gib"] = total / gib
        # 100k steps of the paper on this GPU at the measured speed
        rec["gpu_hours_100k_steps"] = 100_000 * p["global_batch"] * rec["seconds_per_sequence"] / 3600
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", required=True, help="HF config.json of the architecture (benchmarks/arch/*.json)")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps (the first is not timed)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--cpu", action="store_true", help="tiny model of the same family on the CPU (seconds)")
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
