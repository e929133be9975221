"""Seed spread: replicate runs are grouped by name, claims counted per seed, numbers pooled."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mtpsd.reporting.report import HOLDS, NO_DATA, build_report, run_claims
from mtpsd.reporting.seed_spread import claim_counts, mean_sd, seed_groups, setting_table


def test_seed_groups_need_the_base_run():
    runs = ["tiny", "tiny-seed2", "tiny-seed10", "tiny-seed1", "other-seed1", "tiny-soft"]
    assert seed_groups(runs) == {"tiny": ["tiny", "tiny-seed1", "tiny-seed2", "tiny-seed10"]}
    assert seed_groups(["tiny", "tiny-soft"]) == {}


def test_mean_sd():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_sd([5.0]) == (5.0, 0.0)
    m, s = mean_sd([])
    assert math.isnan(m) and math.isnan(s)


def _rows(run: str, k1: float, tau09: float, effk: float, k4: float) -> list[dict]:
    base = dict(table="ours", model="tiny-llama", variant="main", chat_template="off", task="synth_math",
                metric="accuracy_pct", value_se=1.0, eff_k_sd=0.5, run=run, step=None, metric_variant="",
                tokens_per_s=100.0, forward_passes=10, tokens=10, n_docs=200, source_file="x")
    out = []
    for strategy, param, value, ek in (("static", 1, k1, 1.0), ("static", 4, k4, 4.0),
                                       ("confadapt", 0.9, tau09, effk), ("confadapt", 0.7, tau09 - 10, effk + 0.3)):
        out.append(base | dict(strategy=strategy, param=param, value=value, eff_k=ek, checkpoint="final",
                               setting=f"{strategy}-{param}"))
    return out


@pytest.fixture
def results(tmp_path):
    rows = (_rows("tiny", 96.0, 95.0, 3.4, 50.0) + _rows("tiny-seed1", 96.0, 90.0, 3.5, 52.0)
            + _rows("tiny-seed2", 97.0, 95.5, 3.3, 48.0))
    df = pd.DataFrame(rows)
    (tmp_path / "summary").mkdir()
    df.to_csv(tmp_path / "summary" / "results.csv", index=False)
    return df, tmp_path


def test_claim_counts_and_setting_table(results):
    df, _ = results
    runs = ["tiny", "tiny-seed1", "tiny-seed2"]
    claims = {r: run_claims(df, r, "synth_math", None) for r in runs}
    lines, nums = claim_counts(claims, runs, HOLDS, NO_DATA)
    # headline: drops 1.0, 6.0, 1.5 at eff_k 3.4, 3.5, 3.3: seeds 0 and 2 hold it
    assert nums["headline.seeds_holding"] == 2
    assert nums["headline.drop.mean"] == pytest.approx(17 / 6)
    assert nums["headline.drop.sd"] == pytest.approx(pd.Series([1.0, 6.0, 1.5]).std())
    assert any("2 of 3" in line for line in lines)
    # no confidence table and no intermediate checkpoints: those claims have no data, not "0 of 3"
    assert any("Student confidence" in line and "no data (0 of 3 seeds" in line for line in lines)
    table = setting_table(df, runs)
    row = next(line for line in table if line.startswith("| ConfAdapt τ=0.9 |"))
    assert "| 95.0 |" in row and "93.5 ± 3.0" in row and "3.40 ± 0.10" in row


def test_report_has_a_seed_section(results):
    _, root = results
    gen = root / "generated"
    nums = build_report(root / "summary", root / "figures", gen, root / "report.md", task="synth_math")
    text = (root / "report.md").read_text()
    assert "## Seed spread: `tiny` and its replicates" in text
    assert nums["tiny.seeds.headline.seeds_holding"] == 2
