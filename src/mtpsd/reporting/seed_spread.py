"""Seed spread: the same run repeated with other seeds, and how often each claim holds.

Runs named ``<run>-seed<N>`` (``config/seeds.yaml``) are seed replicates of ``<run>``:
identical configs except ``seed``, ``train.seed`` and their own base model. For a group
of replicates this module counts, per claim, the seeds that hold it, and gives the mean
and sample standard deviation of every number of the claim and of each decoding setting
(accuracy, effective k) of the final checkpoint. The report prints both tables; nothing
here picks a seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtpsd.config import SEED_REPLICATE


def seed_groups(runs) -> dict[str, list[str]]:
    """``{base run: [base run, base-seed1, ...]}`` for bases with at least one replicate."""
    groups: dict[str, list[str]] = {}
    runs = list(runs)
    for run in runs:
        m = SEED_REPLICATE.match(run)
        if m and m.group("base") in runs:
            groups.setdefault(m.group("base"), [m.group("base")]).append(run)
    return {b: [b] + sorted(r[1:], key=lambda x: int(SEED_REPLICATE.match(x).group("seed"))) for b, r in groups.items()}


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample SD (ddof 1; 0 for a single value) of the finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _fmt(mean: float, sd: float, digits: int) -> str:
    return "–" if not np.isfinite(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def claim_counts(claims_of: dict[str, list], runs: list[str], holds: str,
                 no_data: str) -> tuple[list[str], dict]:
    """Markdown table: per claim (``mtpsd.reporting.report.Claim``), the seeds holding it (status ``holds``)
    out of the seeds with data for it (status not ``no_data``), and mean ± sd of its numbers
    over those seeds; and those numbers."""
    per_run = {run: {c.key: c for c in claims_of[run]} for run in runs}
    keys = list(dict.fromkeys(k for cl in per_run.values() for k in cl))
    lines = ["| claim | seeds holding it | numbers (mean ± sd over seeds) |", "|---|---|---|"]
    numbers: dict[str, float] = {}
    for key in keys:
        claims = [per_run[r][key] for r in runs if key in per_run[r] and per_run[r][key].status != no_data]
        if not claims:
            statement = next(per_run[r][key].statement for r in runs if key in per_run[r])
            lines.append(f"| {statement} | no data (0 of {len(runs)} seeds evaluated it) | – |")
            continue
        n_hold = sum(c.status == holds for c in claims)
        names = list(dict.fromkeys(n for c in claims for n, v in c.numbers.items() if isinstance(v, (int, float))))
        parts = []
        for name in names:
            m, s = mean_sd([c.numbers.get(name, np.nan) for c in claims])
            parts.append(f"{name} {_fmt(m, s, 2) if len(claims) > 1 else f'{m:.2f}'}")
            numbers[f"{key}.{name}.mean"], numbers[f"{key}.{name}.sd"] = m, s
        numbers[f"{key}.seeds_holding"] = n_hold
        lines.append(f"| {claims[0].statement} | {n_hold} of {len(claims)} | {'; '.join(parts) or '–'} |")
    return lines, numbers


def setting_table(rows: pd.DataFrame, runs: list[str]) -> list[str]:
    """Markdown table: per decoding setting, the first run's accuracy and effective k beside
    the mean ± sd over all ``runs`` (final checkpoint and step-0 baseline rows of one task)."""
    base = runs[0]
    lines = [f"| setting | accuracy, `{base}` | accuracy, mean ± sd ({len(runs)} seeds) | "
             f"effective k, `{base}` | effective k, mean ± sd |", "|---|---|---|---|---|"]
    order = {"baseline_step0": 0, "static": 1, "confadapt": 2, "verify": 3}
    keys = rows[["strategy", "param"]].drop_duplicates()
    keys = keys.assign(o=keys["strategy"].map(order), p=np.where(keys["strategy"] == "confadapt",
                                                              -keys["param"], keys["param"]))
    for _, key in keys.sort_values(["o", "p"]).iterrows():
        sel = rows[(rows["strategy"] == key["strategy"]) & np.isclose(rows["param"], key["param"])]
        by_run = sel.drop_duplicates("run").set_index("run")
        if not set(runs) <= set(by_run.index):
            continue  # a setting not every seed evaluated is no spread
        acc, effk = by_run.loc[runs, "value"], by_run.loc[runs, "eff_k"]
        label = {"baseline_step0": "step-0 model, k=1", "static": f"Static k={key['param']:g}",
                 "confadapt": f"ConfAdapt τ={key['param']:g}", "verify": f"self-verify k={key['param']:g}"}
        lines.append(f"| {label[key['strategy']]} | {acc[base]:.1f} | {_fmt(*mean_sd(acc), 1)} | "
                     f"{effk[base]:.2f} | {_fmt(*mean_sd(effk), 2)} |")
    return lines
