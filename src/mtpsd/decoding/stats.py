"""Pooled decoding statistics (method.md section 6, "acceleration factor").

effective k = sum_g |tokens_g| / sum_g passes_g: the mean chunk size pooled over every
decoding step of every generation; its spread is the sample SD of those chunk sizes.
tokens/s = generated tokens / summed generation wall time (prefill included).

Two accountings of the same generations (``common.Tally``, issue 27): the project's
(tokens until the first end id, stop string or the budget) and the authors' (tokens until an
end id, whole chunks, or until fewer than k budget slots remain; stop strings ignored),
each pooled as tokens over passes: ``eff_k_project`` and ``eff_k_authors``. ``eff_k_mean``
is the one of the run's convention (``convention``).
"""

from __future__ import annotations

import math

from mtpsd.decoding.common import ACCOUNTINGS, GenerationResult


def accounting_stats(results: list[GenerationResult]) -> dict:
    """Both accountings pooled (``eff_k_project``, ``eff_k_authors`` and per accounting its
    tokens, passes and stop reasons); {} when a result lacks them."""
    if not results or any(set(r.accounting) != set(ACCOUNTINGS) for r in results):
        return {}
    out: dict = {"convention": results[0].convention, "accounting": {}}
    for name in ACCOUNTINGS:
        tokens = sum(r.accounting[name]["tokens"] for r in results)
        passes = sum(r.accounting[name]["forward_passes"] for r in results)
        eff_k = tokens / passes if passes else float("nan")
        out[f"eff_k_{name}"] = eff_k
        out["accounting"][name] = {
            "tokens": tokens, "forward_passes": passes, "eff_k": eff_k,
            "stopped_by": {s: sum(r.accounting[name]["stopped_by"] == s for r in results)
                           for s in ("eos", "stop_string", "length")},
        }
    return out


def pooled_stats(results: list[GenerationResult]) -> dict:
    """``eff_k_mean``, ``eff_k_sd``, ``tokens_per_s``, counts, times and per-generation chunk sizes."""
    chunks = [c for r in results for c in r.chunk_sizes]
    tokens = sum(len(r.tokens) for r in results)
    passes = sum(r.forward_passes for r in results)
    wall = sum(r.wall_time_s for r in results)
    mean = tokens / passes if passes else float("nan")
    sd = math.sqrt(sum((c - mean) ** 2 for c in chunks) / (len(chunks) - 1)) if len(chunks) > 1 else 0.0
    return {
        "n_generations": len(results), "tokens": tokens, "forward_passes": passes,
        "eff_k_mean": mean, "eff_k_sd": sd,
        "tokens_per_s": tokens / wall if wall > 0 else float("nan"),
        "wall_s": wall, "prefill_s": sum(r.prefill_time_s for r in results),
        "decode_s": sum(r.decode_time_s for r in results),
        "stopped_by": {s: sum(r.stopped_by == s for r in results) for s in ("eos", "stop_string", "length")},
        "chunk_sizes": [r.chunk_sizes for r in results],
        **accounting_stats(results),
    }
