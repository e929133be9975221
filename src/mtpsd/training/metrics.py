"""Training metrics over a logging window (rows of ``train_metrics.jsonl``).

Row fields (docs/architecture.md): ``step``, ``loss`` (mean per-step loss over the
window), ``lr``, ``tokens_per_s`` (supervised tokens per second of wall time),
``supervised_tokens`` (cumulative), ``student_conf_mean`` (top-1 probability at MTP
read-out positions), ``student_entropy_mean`` (nats), ``agreement`` (list over
j = 1..k_max: rate of target == student argmax, null where no position j was seen),
``kl_mean`` (KL(P_T||P_S) at read-out positions; null in "gt" mode), ``k_mean``,
``elapsed_s``, ``regions_kept`` (kept MTP regions / sampled prediction positions; close
to 1 unless texts end early, a low value means most sampled regions were dropped).
"""

from __future__ import annotations

import time

import torch


class MetricsWindow:
    """Sums over the steps since the last logged row."""

    def __init__(self, k_max: int):
        self.k_max = k_max
        self.reset()

    def reset(self) -> None:
        self.t0 = time.perf_counter()
        self.steps = 0
        self.loss = 0.0
        self.k_sum = 0.0
        self.sums = torch.zeros(4, dtype=torch.float64)  # S, conf, entropy, kl
        self.kl_count = 0
        self.agree = torch.zeros(self.k_max, dtype=torch.float64)
        self.seen = torch.zeros(self.k_max, dtype=torch.float64)
        self.regions = [0, 0]  # kept, sampled

    def add_micro(self, out, k: int) -> None:
        """Accumulate one micro-batch (an ``MTPLossOutput``)."""
        S = out.targets.numel()
        self.sums += torch.tensor([S, float(out.student_conf.sum()), float(out.student_entropy.sum()),
                                   float(out.kl.sum()) if out.kl is not None else 0.0], dtype=torch.float64)
        if out.kl is not None:
            self.kl_count += S
        j = out.offset.clamp(max=self.k_max - 1).cpu()
        self.seen += torch.bincount(j, minlength=self.k_max).double()
        self.agree += torch.bincount(j, weights=out.agreement.cpu().double(), minlength=self.k_max)
        self.k_sum += k
        if out.layout is not None:
            self.regions[0] += sum(len(r) for r in out.layout.regions_per_row)
            self.regions[1] += out.layout.num_sampled

    def add_step(self, loss: float) -> None:
        self.steps += 1
        self.loss += loss

    def row(self, *, step: int, lr: float, supervised_total: int, elapsed: float, micro_batches: int) -> dict:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        S = float(self.sums[0])
        agreement = [None if self.seen[j] == 0 else float(self.agree[j] / self.seen[j]) for j in range(self.k_max)]
        return {
            "step": step,
            "loss": self.loss / max(self.steps, 1),
            "lr": lr,
            "tokens_per_s": S / dt,
            "supervised_tokens": supervised_total,
            "student_conf_mean": float(self.sums[1]) / S if S else None,
            "student_entropy_mean": float(self.sums[2]) / S if S else None,
            "agreement": agreement,
            "kl_mean": float(self.sums[3]) / self.kl_count if self.kl_count else None,
            "k_mean": self.k_sum / max(micro_batches, 1),
            "elapsed_s": elapsed,
            "regions_kept": self.regions[0] / self.regions[1] if self.regions[1] else None,
        }
