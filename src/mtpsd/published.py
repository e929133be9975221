"""Import a published MTP checkpoint for evaluation without training (reviewer workflow).

A run whose config names ``checkpoint: <hub id | directory | .gguf>`` skips
``add_mtp_token``/``train_mtp``: this module writes the checkpoint to
``results/runs/{run}/checkpoint`` in the same form ``train_mtp`` leaves there (plain HF
directory + tokenizer, ``config.mtp_token_id`` set), and every decode/evaluate rule then
works unchanged.

The ``<MTP>`` id (method.md section 2) comes from ``config.mtp_token_id`` of the source
(what ``mtpsd add-mtp-token`` and ``train-mtp`` record). A checkpoint made by other code
may not record it: then ``mtp_token`` names the token string (e.g. ``"<MTP>"`` or a
reserved token) and its id is looked up in the tokenizer. A checkpoint with neither is
refused: without the id, decoding would append some ordinary token as the mask.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mtpsd.errors import MtpsdError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_mtp_token_id(model, tokenizer, *, source: str, mtp_token: str | None = None) -> int:
    """The ``<MTP>`` id of a loaded checkpoint; records it in ``model.config``."""
    rows = model.get_input_embeddings().weight.shape[0]
    tid = getattr(model.config, "mtp_token_id", None)
    how = "config.mtp_token_id"
    if tid is None:
        if mtp_token is None:
            raise MtpsdError(
                f"{source}: config.json has no mtp_token_id, so this is not an MTP checkpoint made by "
                f"mtpsd; pass the mask token's string (import-checkpoint --mtp-token '<MTP>') if it has one")
        tid = tokenizer.convert_tokens_to_ids(mtp_token)
        unk = tokenizer.unk_token_id
        if tid is None or (unk is not None and tid == unk and mtp_token != tokenizer.unk_token):
            raise MtpsdError(f"{source}: --mtp-token {mtp_token!r} is not a token of its tokenizer")
        how = f"token {mtp_token!r}"
    tid = int(tid)
    if not 0 <= tid < rows:
        raise MtpsdError(f"{source}: mtp_token_id={tid} ({how}) is outside the embedding rows (0..{rows - 1})")
    model.config.mtp_token_id = tid
    return tid


def import_mtp_checkpoint(source: str, out: str | Path, *, mtp_token: str | None = None,
                          dtype: str = "float32") -> dict:
    """Load ``source`` (hub id, directory, GGUF), check its ``<MTP>`` id, save it to ``out``.

    Writes ``out/`` (HF model + tokenizer) and ``out/import_info.json`` (source, id,
    provenance); returns the info dict.
    """
    from mtpsd.io import atomic_write_json, provenance
    from mtpsd.mtp_token import load_base, save_model_dir

    if dtype not in DTYPES:
        raise MtpsdError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    model, tok = load_base(source, dtype=DTYPES[dtype])
    tid = resolve_mtp_token_id(model, tok, source=source, mtp_token=mtp_token)
    save_model_dir(model, tok, out)
    info = {
        "source": source,
        "mtp_token_id": tid,
        "mtp_token": tok.convert_ids_to_tokens(tid) if tid < len(tok) else None,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": dtype,
        "trained_steps": getattr(model.config, "mtpsd_train_steps", None),
    }
    atomic_write_json(Path(out) / "import_info.json", {**info, "provenance": provenance()})
    return info
