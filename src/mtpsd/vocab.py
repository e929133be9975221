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
