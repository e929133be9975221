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
    """Sums over the steps since the last logged row.

    The sums stay on the device of the loss outputs (float64) until :meth:`row`: accumulating a
    micro-batch or a step reads nothing back to the host, so the training step never waits for
    the device; a logging step reads everything at once. Counts (supervised rows, regions) come
    from the host-side layout.
    """

    def __init__(self, k_max: int):
        self.k_max = k_max
        self.reset()

    def reset(self) -> None:
        self.t0 = time.perf_counter()
        self.steps = 0
        self.loss = None  # () float64 on the device: sum of per-step losses
        self.k_sum = 0.0
        self.supervised = 0  # S over the window (host)
        self.sums = None  # (3,) float64 on the device: conf, entropy, kl
        self.kl_count = 0
        self.agree = None  # (k_max,) float64 on the device
        self.seen = [0] * self.k_max  # read-out rows per j (host, from the layouts)
        self.regions = [0, 0]  # kept, sampled

    def _zeros(self, like: torch.Tensor, n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.float64, device=like.device)

    def add_micro(self, out, k: int) -> None:
        """Accumulate one micro-batch (an ``MTPLossOutput``)."""
        S = out.targets.numel()
        self.supervised += S
        if self.sums is None:
            self.sums = self._zeros(out.student_conf, 3)
            self.agree = self._zeros(out.student_conf, self.k_max)
        kl = out.kl.sum() if out.kl is not None else out.student_conf.new_zeros(())
        self.sums += torch.stack([x.double() for x in (out.student_conf.sum(), out.student_entropy.sum(), kl)])
        if out.kl is not None:
            self.kl_count += S
        j = out.offset.clamp(max=self.k_max - 1)
        self.agree.index_add_(0, j, out.agreement.double())
        if out.layout is not None:  # every kept region has k read-out rows, j = 0..k-1
            kept = sum(len(r) for r in out.layout.regions_per_row)
            for jj in range(min(out.layout.k, self.k_max)):
                self.seen[jj] += kept
            self.regions[0] += kept
            self.regions[1] += out.layout.num_sampled
        else:
            for jj in j.tolist():
                self.seen[jj] += 1
        self.k_sum += k

    def add_step(self, loss: torch.Tensor | float) -> None:
        """One optimizer step's loss (a device scalar or a float)."""
        self.steps += 1
        loss = torch.as_tensor(loss, dtype=torch.float64)
        self.loss = loss.double() if self.loss is None else self.loss + loss.double()

    def row(self, *, step: int, lr: float, supervised_total: int, elapsed: float, micro_batches: int) -> dict:
        """The window as a metrics row: the one place that reads the device sums back."""
        dt = max(time.perf_counter() - self.t0, 1e-9)
        S = self.supervised
        loss = float(self.loss) if self.loss is not None else 0.0
        conf, ent, kl = self.sums.tolist() if self.sums is not None else (0.0, 0.0, 0.0)
        agree = self.agree.tolist() if self.agree is not None else [0.0] * self.k_max
        agreement = [None if self.seen[j] == 0 else agree[j] / self.seen[j] for j in range(self.k_max)]
        return {
            "step": step,
            "loss": loss / max(self.steps, 1),
            "lr": lr,
            "tokens_per_s": S / dt,
            "supervised_tokens": supervised_total,
            "student_conf_mean": conf / S if S else None,
            "student_entropy_mean": ent / S if S else None,
            "agreement": agreement,
            "kl_mean": kl / self.kl_count if self.kl_count else None,
            "k_mean": self.k_sum / max(micro_batches, 1),
            "elapsed_s": elapsed,
            "regions_kept": self.regions[0] / self.regions[1] if self.regions[1] else None,
        }
