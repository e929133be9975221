"""Peak RSS increase of a few real ``train_mtp`` steps, in a fresh process (for test_memory_plan).

    python -m tests.memory_probe ROOT CONFIG_JSON [STEPS]
        ->  prints {"base", "peak", "increase", "optimizer_step_increase"} (bytes)
    python -m tests.memory_probe --adamw8bit-step compiled|eager quantized|float32 [ROWS COLS]
        ->  prints {"numel", "temporaries"}: the peak above the start of one adamw8bit step of one
            bf16 tensor (after a first step: states exist, torch.compile has compiled)

``optimizer_step_increase``: the peak inside the optimizer steps alone (global optimizer step
hooks reset the kernel's peak mark before each step and read it after), above the same base.

The baseline is taken after a warm-up (load the model once, one tiny forward/backward,
free it): import-time and first-use costs of transformers and torch (code pages, kernel
init: ~150 MB here) are not tensors and are not what the memory plan estimates (on CUDA
their counterpart is the CUDA context, which the plan states separately). Run with
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors return to the OS and the peak is the
peak of live tensors, not of glibc's heap.
"""

from __future__ import annotations

import gc
import json
import resource
import sys

import torch


def _rss() -> int:
    """Current resident set size in bytes (Linux)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak() -> int:
    """Peak RSS in bytes since the last reset (VmHWM)."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib * 1024


def main(root: str, config_json: str, steps: str = "3") -> None:
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM

    from mtpsd.config import load_resolved
    from mtpsd.training.loop import train_mtp

    cfg = load_resolved(config_json)
    warm = AutoModelForCausalLM.from_pretrained(f"{root}/mtp_init", dtype=torch.float32)
    warm(input_ids=torch.ones(1, 8, dtype=torch.long)).logits.sum().backward()
    del warm
    gc.collect()
    base = _rss()
    # without a reset, ru_maxrss would also hold peaks from before the baseline (imports,
    # loading the warm-up model), which once put 1.3 GB that is not training into the increase
    reset = _reset_peak()
    peaks = {"outside": 0, "optimizer": 0}

    def before_step(*_):
        peaks["outside"] = max(peaks["outside"], _peak())
        _reset_peak()

    def after_step(*_):
        peaks["optimizer"] = max(peaks["optimizer"], _peak())
        _reset_peak()

    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    hooks = [register_optimizer_step_pre_hook(before_step),
             register_optimizer_step_post_hook(after_step)] if reset else []
    train_mtp(cfg, init=f"{root}/mtp_init", train_path=f"{root}/train.jsonl", checkpoint_dir=f"{root}/c",
              out=f"{root}/o", metrics_path=f"{root}/m.jsonl", device="cpu", progress=False, stop_after=int(steps))
    for h in hooks:
        h.remove()
    if reset:
        peak = max(peaks["outside"], peaks["optimizer"], _peak())
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"base": base, "peak": peak, "increase": peak - base,
                      "optimizer_step_increase": peaks["optimizer"] - base if reset else None}))


def adamw8bit_step(mode: str, states: str, rows: str = "4096", cols: str = "4096") -> None:
    torch.set_num_threads(1)
    from torchao.optim import AdamW8bit

    from mtpsd.training.optim import build_optimizer

    shape = (int(rows), int(cols))
    p = torch.nn.Parameter(torch.randn(shape, dtype=torch.bfloat16))
    p.grad = torch.randn(shape, dtype=torch.bfloat16)
    full = (p,) if states == "float32" else ()
    if mode == "compiled":  # what training.optim runs on CUDA: torchao's own step, compiled
        class Compiled(AdamW8bit):
            def _new_buffer(self, q, signed):
                return torch.zeros_like(q, dtype=torch.float32) if full else super()._new_buffer(q, signed)

        opt = Compiled([p], lr=1e-3, weight_decay=0.01, bf16_stochastic_round=True)
    else:  # training.optim on CPU: eager
        opt = build_optimizer([p], name="adamw8bit", lr=1e-3, weight_dtype=torch.bfloat16, full_precision_state=full)
    opt.step()
    gc.collect()
    base = _rss()
    _reset_peak()
    opt.step()
    print(json.dumps({"numel": p.numel(), "temporaries": _peak() - base}))


if __name__ == "__main__":
    if sys.argv[1] == "--adamw8bit-step":
        adamw8bit_step(*sys.argv[2:])
    else:
        main(*sys.argv[1:4])
