"""Which vocabulary rows may win an argmax.

After ``resize_token_embeddings(pad_to_multiple_of=...)`` the embedding matrix can
have padding rows beyond the tokenizer; ``<MTP>`` itself is an input-only token.
Neither may ever be proposed, emitted or used as a distillation target.
"""

from __future__ import annotations

import torch


def banned_token_ids(vocab_rows: int, tokenizer_size: int, mtp_token_id: int | None) -> list[int]:
    """Ids that must never win: ``<MTP>`` and every row >= ``tokenizer_size``."""
    banned = list(range(tokenizer_size, vocab_rows))
    if mtp_token_id is not None and mtp_token_id not in banned:
        banned.append(int(mtp_token_id))
    return banned


def suppress(logits: torch.Tensor, banned: list[int] | torch.Tensor) -> torch.Tensor:
    """Return ``logits`` with the banned columns set to -inf (last dim is the vocab)."""
    if len(banned) == 0:
        return logits
    out = logits.clone()
    out[..., torch.as_tensor(banned, device=logits.device, dtype=torch.long)] = float("-inf")
    return out


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(t) for t in (value if isinstance(value, (list, tuple)) else [value]) if t is not None]


def end_token_ids(model, tokenizer=None) -> tuple[int, ...]:
    """Every id that ends a generation: the model's generation config, its config and the
    tokenizer's EOS, sorted and without repeats.

    Llama 3.1 ends a turn with ``<|eot_id|>`` but its tokenizer's EOS may be
    ``<|end_of_text|>``; Qwen3's chat turns end with ``<|im_end|>`` and documents with
    ``<|endoftext|>``. Stopping at only one of them lets a decoder run on to the token
    budget. Imported checkpoints also carry the registry's end ids in their generation
    config (``mtpsd.published.record_end_ids``).
    """
    gc = getattr(model, "generation_config", None)
    ids = set(_ids(getattr(gc, "eos_token_id", None)))
    ids.update(_ids(getattr(getattr(model, "config", None), "eos_token_id", None)))
    if tokenizer is not None:
        ids.update(_ids(getattr(tokenizer, "eos_token_id", None)))
    return tuple(sorted(ids))
