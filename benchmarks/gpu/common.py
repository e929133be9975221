"""Shared pieces of the GPU check: deadlines, random-weight models, JSON files, timing.

torch is imported where it is used, so the driver (``check``) and ``summary`` stay light.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

# Files the check writes (at most 8 in one folder, see check.py).
CHECK_JSON = "check.json"  # run config, sections, CUDA test counts
THROUGHPUT_JSON = "throughput.json"
ROOFLINE_JSON = "roofline.json"
SUMMARY_MD = "summary.md"
LOG = "gpu_check.log"


# Method names (throughput.py) that the summary's targets refer to.
OURS_K1 = "ours-k1"
HF_EAGER = "hf-eager"
HF_STATIC = "hf-static-compiled"
CONFADAPT = "ours-confadapt-replayed"
CONFADAPT_FULL = "ours-confadapt-replayed-nobudget"


def train_json(arch: str) -> str:
    return f"train_{arch}.json"


def arch_name(path: str | os.PathLike) -> str:
    """``benchmarks/arch/llama31_8b.json`` -> ``llama31_8b``."""
    return Path(path).stem


def slug(text: str) -> str:
    """``NVIDIA H200`` -> ``nvidia-h200`` (a folder name)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


class Deadline:
    """An absolute end time (``time.time()`` seconds, so subprocesses share it)."""

    def __init__(self, end: float):
        self.end = float(end)

    def left(self) -> float:
        return self.end - time.time()

    def passed(self, reserve: float = 0.0) -> bool:
        """True when less than ``reserve`` seconds are left."""
        return self.left() < reserve

    def split(self, fraction: float) -> "Deadline":
        """A deadline ``fraction`` of the way from now to this one."""
        return Deadline(time.time() + max(self.left(), 0.0) * fraction)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def write_json(path: Path, obj: dict) -> None:
    """Atomic write (a killed section leaves the previous complete file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def merge_arch(path: Path, arch: str, value: dict, **top) -> None:
    """``path["archs"][arch] = value`` (and top-level keys), keeping other architectures."""
    data = read_json(path)
    data.update(top)
    data.setdefault("archs", {})[arch] = value
    write_json(path, data)


def provenance() -> dict:
    """mtpsd's provenance block (versions, device, git sha) where mtpsd imports, else versions only."""
    try:
        from mtpsd.io import provenance as prov

        return prov()
    except Exception as e:  # noqa: BLE001 - provenance must never stop a measurement
        return {"error": repr(e)}


def resolve_dtype(name: str):
    import torch

    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
             "float32": torch.float32, "fp32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise SystemExit(f"--dtype {name!r}: choose one of {', '.join(table)}")
    return table[name]


def random_model(arch: str | os.PathLike, *, device, dtype, seed: int = 0):
    """A model of the architecture in ``arch`` (an HF config.json) with random weights,
    initialised directly on ``device`` in ``dtype`` (no hub access, no weight files).

    EOS is removed from its generation config so HF ``generate`` always runs to
    ``max_new_tokens`` (random weights: argmax tokens are meaningless, lengths must be fixed).
    The last vocabulary id stands in for ``<MTP>``: an untrained mask token costs the same.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(str(arch))
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    model.eval().requires_grad_(False)
    model.config.mtp_token_id = int(cfg.vocab_size) - 1
    gc = model.generation_config
    gc.eos_token_id = None
    gc.pad_token_id = 0
    gc.bos_token_id = None
    return model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """``(result, seconds)`` of ``fn()``, the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def random_prompts(batch: int, length: int, vocab: int, *, seed: int) -> list[list[int]]:
    """``batch`` prompts of ``length`` random ids below ``vocab - 1`` (the ``<MTP>`` stand-in)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab - 1, (batch, length), generator=g).tolist()
