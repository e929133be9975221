"""Train/validation split stratified by seed question (method.md section 5).

All rows derived from one seed question (MetaMathQA's ``original_question``; for GSM8K
the question itself) fall on the same side, so validation measures generalisation to
unseen problems and not to paraphrases of training problems.

The split is a pure function of (set of seed ids, fraction, seed): the distinct seed ids
are sorted, shuffled with ``random.Random(seed)``, and the first
``round(fraction * n_seeds)`` (at least 1, at most n_seeds - 1) go to validation.
"""

from __future__ import annotations

import random

from mtpsd.errors import MtpsdError


def split_by_seed(rows: list[dict], *, validation_fraction: float, seed: int,
                  key: str = "seed_id") -> tuple[list[dict], list[dict]]:
    """``(train, validation)``: rows sharing ``row[key]`` stay together; row order is kept."""
    if not 0.0 < validation_fraction < 1.0:
        raise MtpsdError(f"data.validation_fraction={validation_fraction}: must be in (0, 1)")
    seeds = sorted({r[key] for r in rows})
    if len(seeds) < 2:
        raise MtpsdError(f"cannot split {len(rows)} rows with {len(seeds)} distinct {key!r}: need at least 2")
    random.Random(seed).shuffle(seeds)
    n_val = min(len(seeds) - 1, max(1, round(validation_fraction * len(seeds))))
    held_out = set(seeds[:n_val])
    train = [r for r in rows if r[key] not in held_out]
    validation = [r for r in rows if r[key] in held_out]
    return train, validation
