"""ConfAdapt acceptance replayed through the engine's ``accept_fn`` (random weights accept
nothing, so the speed of ConfAdapt is measured with recorded or stated chunk sizes).

Two sources:
- a stated distribution: chunk sizes ``n = 1..k_max`` with ``P(n)`` proportional to
  ``q**(n-1)`` (a geometric distribution truncated at ``k_max``), ``q`` solved so that the
  mean is the paper's effective k (3.3 at tau 0.9, k_max 16). Each (row, step) draws one
  size from a seeded table, so every method and repetition replays the same sequence;
- a decode JSONL (``mtpsd decode`` output, one row per prompt with ``chunk_sizes``):
  batch row ``r`` replays trace ``r mod n_traces``, pass ``s`` its ``s``-th chunk size
  (cycling when the trace is shorter than the generation).
The replayed size is capped by ``n_cand`` (what the engine offers: ``k_max`` at most,
fewer at the token budget or under a mask budget), so the realised effective k is
measured from the results, not assumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def truncated_geometric(mean: float, k_max: int) -> tuple[list[float], float]:
    """``(probs, q)``: ``probs[n-1] = P(n)`` proportional to ``q**(n-1)``, n = 1..k_max, with that mean."""
    if not 1.0 <= mean < (k_max + 1) / 2:
        raise ValueError(f"mean {mean} must be in [1, {(k_max + 1) / 2}) for k_max={k_max}")

    def dist(q: float) -> list[float]:
        w = [q ** i for i in range(k_max)]
        s = sum(w)
        return [x / s for x in w]

    def mean_of(q: float) -> float:
        return sum((i + 1) * p for i, p in enumerate(dist(q)))

    lo, hi = 0.0, 1.0 - 1e-12  # mean_of rises from 1 (q=0) to (k_max+1)/2 (q->1)
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_of(mid) < mean else (lo, mid)
    q = (lo + hi) / 2
    return dist(q), q


class Replayer:
    """``accept_fn(row, step, n_cand) -> 1..n_cand`` from a table of chunk sizes per row."""

    def __init__(self, traces: list[list[int]], description: dict):
        if not traces or not all(traces):
            raise ValueError("need at least one non-empty chunk-size trace")
        if any(int(n) < 1 for t in traces for n in t):
            raise ValueError("chunk sizes must be >= 1")
        self.traces = [[int(n) for n in t] for t in traces]
        self.description = description
        self.calls = 0

    def __call__(self, row: int, step: int, n_cand: int) -> int:
        self.calls += 1
        trace = self.traces[row % len(self.traces)]
        return max(1, min(trace[step % len(trace)], n_cand))

    @classmethod
    def from_distribution(cls, mean: float = 3.3, k_max: int = 16, *, rows: int = 64, steps: int = 512,
                          seed: int = 0) -> "Replayer":
        probs, q = truncated_geometric(mean, k_max)
        g = torch.Generator().manual_seed(seed)
        table = torch.multinomial(torch.tensor(probs, dtype=torch.float64), rows * steps, replacement=True,
                                  generator=g).view(rows, steps) + 1
        desc = {"source": "distribution", "kind": "truncated geometric", "k_max": k_max, "q": q,
                "mean": sum((i + 1) * p for i, p in enumerate(probs)), "probs": probs,
                "table_mean": float(table.double().mean()), "seed": seed,
                "note": "P(n) ~ q^(n-1), n=1..k_max, mean = the paper's effective k at tau 0.9"}
        return cls(table.tolist(), desc)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> "Replayer":
        traces = []
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if "chunk_sizes" not in row:
                    raise ValueError(f"{path}: a row has no 'chunk_sizes' (expected mtpsd decode output)")
                if row["chunk_sizes"]:
                    traces.append(row["chunk_sizes"])
        flat = [n for t in traces for n in t]
        if not flat:
            raise ValueError(f"{path}: no chunk sizes found")
        desc = {"source": "trace", "path": str(path), "n_traces": len(traces), "mean": sum(flat) / len(flat),
                "max": max(flat)}
        return cls(traces, desc)
