"""Peak RSS increase of a few real ``train_mtp`` steps, in a fresh process (for test_memory_plan).

    python -m tests.memory_probe ROOT CONFIG_JSON   ->  prints {"base", "peak", "increase"} (bytes)

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


def main(root: str, config_json: str) -> None:
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
    train_mtp(cfg, init=f"{root}/mtp_init", train_path=f"{root}/train.jsonl", checkpoint_dir=f"{root}/c",
              out=f"{root}/o", metrics_path=f"{root}/m.jsonl", device="cpu", progress=False, stop_after=3)
    peak = _peak() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"base": base, "peak": peak, "increase": peak - base}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
