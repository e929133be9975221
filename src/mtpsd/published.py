"""Published MTP checkpoints: the registry of the authors' two, and import for evaluation.

A run whose config names ``checkpoint: <hub id | directory | .gguf>`` skips
``add_mtp_token``/``train_mtp``: :func:`import_mtp_checkpoint` writes the checkpoint to
``results/runs/{run}/checkpoint`` in the form ``train_mtp`` leaves there (plain HF
directory + tokenizer, ``config.mtp_token_id`` set, every end id in
``generation_config.eos_token_id``), and every decode/evaluate rule then works unchanged.

The authors' checkpoints (:data:`PUBLISHED`) record no ``mtp_token_id``; the registry
knows their mask id, end ids and the chat-template setting the paper evaluated them
with, so ``checkpoint: jwkirchenbauer/L3-1-8B-Magpie-MTP`` and nothing else is a complete
run (:func:`apply_published_defaults` fills the run's model keys at config resolve time).

Where the ``<MTP>`` id comes from, first match wins:

1. ``config.mtp_token_id`` of the source (what ``mtpsd add-mtp-token``/``train-mtp`` record);
2. the run key ``mtp_token``: a token string (looked up in the tokenizer) or an integer id;
3. the registry entry of the source.

A checkpoint with none of them is refused: decoding would append some ordinary token as
the mask. Tests stand a local directory in for a hub id by patching :data:`PUBLISHED`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from mtpsd.errors import MtpsdError

IMPORT_DTYPES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class PublishedCheckpoint:
    """What the project knows about one published MTP checkpoint (its hub config lacks it)."""

    hub_id: str
    paper_model: str  # `model` column of paper_results.csv: the report sets our rows beside it
    mtp_token_id: int
    end_token_ids: tuple[int, ...]
    chat_template: bool  # as the paper evaluated it (method.md section 4)
    base_model: str  # the NTP model it was distilled from (teacher; creative-writing perplexity)
    model_name: str  # results/models/{name}: the same base as config/paper.yaml's run
    k_max: int = 16  # trained with k ~ U[2, 16] (method.md section 3): ConfAdapt's k_max

    def config_defaults(self) -> dict:
        """The run keys this checkpoint implies (a run's own keys win over these)."""
        return {
            "model": {"name": self.model_name, "source": "pretrained", "pretrained": self.base_model,
                      "chat_template": self.chat_template, "paper_model": self.paper_model},
            "train": {"k_max": self.k_max},
        }


# Facts from the authors' hub configs and debriefs (issue 13): both are bf16 and neither
# config records mtp_token_id. Llama: vocabulary padded to 128384 rows, 32 special tokens
# added after the base tokenizer and only the first is the mask; Llama 3.1 also ends turns
# with <|eom_id|> 128008. Qwen3: vocabulary 151936 rows (no resize), the mask is an added token.
PUBLISHED: dict[str, PublishedCheckpoint] = {
    c.hub_id: c for c in (
        PublishedCheckpoint(
            hub_id="jwkirchenbauer/L3-1-8B-Magpie-MTP", paper_model="L3.1-8B-Magpie",
            mtp_token_id=128259, end_token_ids=(128001, 128008, 128009), chat_template=True,
            base_model="Magpie-Align/Llama-3.1-8B-Magpie-Align-SFT-v0.1", model_name="l3-8b-magpie"),
        PublishedCheckpoint(
            hub_id="jwkirchenbauer/Qwen3-4B-Inst-2507-MTP", paper_model="Qwen3-4B-Inst-2507",
            mtp_token_id=151669, end_token_ids=(151643, 151645), chat_template=False,
            base_model="Qwen/Qwen3-4B-Instruct-2507", model_name="qwen3-4b-inst-2507"),
    )
}


def published_checkpoint(source: str | None) -> PublishedCheckpoint | None:
    """The registry entry of ``source`` (a hub id, as written in ``checkpoint:``), or None."""
    return PUBLISHED.get(source) if source else None


def _without_explicit(defaults: dict, explicit: dict) -> dict:
    """``defaults`` minus every leaf key that ``explicit`` sets."""
    out = {}
    for k, v in defaults.items():
        if isinstance(v, dict):
            sub = _without_explicit(v, explicit.get(k) if isinstance(explicit.get(k), dict) else {})
            if sub:
                out[k] = sub
        elif k not in explicit:
            out[k] = v
    return out


def apply_published_defaults(raw: dict, explicit: dict) -> dict:
    """``raw`` (a merged config dict) with the registry's keys for its ``checkpoint`` applied.

    Precedence: the run's own overrides (``explicit``) > the registry > the global config
    (config.yaml sets ``model.chat_template: false`` for the tiny model; the Llama checkpoint
    needs it on). Sources not in the registry leave ``raw`` unchanged.
    """
    from mtpsd.config.base import deep_merge

    spec = published_checkpoint(raw.get("checkpoint"))
    if spec is None:
        return raw
    return deep_merge(raw, _without_explicit(spec.config_defaults(), copy.deepcopy(explicit or {})))


def check_checkpoint_source(checkpoint: str | None, mtp_token, where: str = "checkpoint") -> None:
    """Fail at config time when the ``<MTP>`` id cannot be found at import.

    Known without loading: registry entries, ``mtp_token`` given, a local directory whose
    config.json records ``mtp_token_id``. A GGUF file never records it. Hub ids that are not
    in the registry are checked when imported (no hub access at config time).
    """
    import json

    from mtpsd.config.base import ConfigError

    if not checkpoint or mtp_token is not None or published_checkpoint(checkpoint) is not None:
        return
    known = ", ".join(PUBLISHED)
    hint = (f"set the run key mtp_token to its mask token (string) or id (integer); the published "
            f"checkpoints mtpsd knows without it: {known}")
    path = Path(checkpoint)
    if checkpoint.endswith(".gguf"):
        raise ConfigError(f"{where}: {checkpoint} is a GGUF file, which records no mtp_token_id; {hint}")
    cfg_file = path / "config.json"
    if path.is_dir():
        if not cfg_file.is_file():
            raise ConfigError(f"{where}: {checkpoint} is a directory without config.json (not a checkpoint)")
        try:
            tid = json.loads(cfg_file.read_text(encoding="utf-8")).get("mtp_token_id")
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: {cfg_file} is not valid JSON ({e})") from None
        if tid is None:
            raise ConfigError(f"{where}: {checkpoint}/config.json has no mtp_token_id; {hint}")


def _mask_id(model, tokenizer, *, source: str, mtp_token) -> tuple[int, str]:
    """``(id, how it was found)`` in the order of the module docstring."""
    tid = getattr(model.config, "mtp_token_id", None)
    if tid is not None:
        return int(tid), "config.mtp_token_id"
    if isinstance(mtp_token, int) and not isinstance(mtp_token, bool):
        return mtp_token, f"mtp_token id {mtp_token}"
    if mtp_token is not None:
        tid = tokenizer.convert_tokens_to_ids(mtp_token)
        unk = tokenizer.unk_token_id
        if tid is None or (unk is not None and tid == unk and mtp_token != tokenizer.unk_token):
            raise MtpsdError(f"{source}: mtp_token {mtp_token!r} is not a token of its tokenizer")
        return int(tid), f"token {mtp_token!r}"
    spec = published_checkpoint(source)
    if spec is not None:
        return spec.mtp_token_id, f"registry entry {spec.hub_id}"
    raise MtpsdError(
        f"{source}: config.json has no mtp_token_id and this is not a published checkpoint mtpsd knows "
        f"({', '.join(PUBLISHED)}); give its mask token: run key mtp_token (string or integer id), "
        f"or import-checkpoint --mtp-token '<MTP>' / --mtp-token-id N")


def resolve_mtp_token_id(model, tokenizer, *, source: str, mtp_token: str | int | None = None) -> int:
    """The ``<MTP>`` id of a loaded checkpoint; records it in ``model.config``."""
    rows = model.get_input_embeddings().weight.shape[0]
    tid, how = _mask_id(model, tokenizer, source=source, mtp_token=mtp_token)
    if not 0 <= tid < rows:
        raise MtpsdError(f"{source}: mtp_token_id={tid} ({how}) is outside the embedding rows (0..{rows - 1})")
    model.config.mtp_token_id = tid
    return tid


def record_end_ids(model, tokenizer, *, source: str) -> list[int]:
    """Every end id (generation config, config, tokenizer, registry) into
    ``model.generation_config.eos_token_id``, so decoding the saved checkpoint stops at each."""
    from mtpsd.vocab import end_token_ids

    ids = set(end_token_ids(model, tokenizer))
    spec = published_checkpoint(source)
    if spec is not None:
        ids.update(spec.end_token_ids)
    rows = model.get_output_embeddings().weight.shape[0]
    bad = sorted(i for i in ids if not 0 <= i < rows)
    if bad:
        raise MtpsdError(f"{source}: end ids {bad} are outside the vocabulary rows (0..{rows - 1})")
    if not ids:
        raise MtpsdError(f"{source}: no end id in its generation config, config or tokenizer: "
                         "decoding would never stop before the token budget")
    model.generation_config.eos_token_id = sorted(ids)
    return sorted(ids)


def import_mtp_checkpoint(source: str, out: str | Path, *, mtp_token: str | int | None = None,
                          dtype: str = "auto") -> dict:
    """Load ``source`` (hub id, directory, GGUF), find its ``<MTP>`` and end ids, save to ``out``.

    ``dtype="auto"`` keeps the source's dtype (config ``dtype``/``torch_dtype``: a bf16
    checkpoint is loaded and saved in bf16, never through a float32 copy); GGUF files
    dequantize to float32. Writes ``out/`` (HF model + tokenizer) and
    ``out/import_info.json`` (source, ids, dtype, provenance); returns the info dict.
    """
    import torch

    from mtpsd.io import atomic_write_json, provenance
    from mtpsd.mtp_token import load_base, save_model_dir

    if dtype not in IMPORT_DTYPES:
        raise MtpsdError(f"dtype {dtype!r}: choose one of {', '.join(IMPORT_DTYPES)}")
    model, tok = load_base(source, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    tid = resolve_mtp_token_id(model, tok, source=source, mtp_token=mtp_token)
    ends = record_end_ids(model, tok, source=source)
    save_model_dir(model, tok, out)
    spec = published_checkpoint(source)
    info = {
        "source": source,
        "published": spec.hub_id if spec is not None else None,
        "mtp_token_id": tid,
        "mtp_token": tok.convert_ids_to_tokens(tid) if tid < len(tok) else None,
        "end_token_ids": ends,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "vocab_rows": model.get_input_embeddings().weight.shape[0],
        "tokenizer_size": len(tok),
        "trained_steps": getattr(model.config, "mtpsd_train_steps", None),
    }
    atomic_write_json(Path(out) / "import_info.json", {**info, "provenance": provenance()})
    return info
