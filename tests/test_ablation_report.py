"""The ablation section of the report, figure 11 and the summary's ablation columns, on a
fixture summary (tests/fixtures/summary/ablations_results.csv: hand-made test data, not
measured: a reference run `tiny-abl`, one run per ablation trained alike, and the default
run `tiny` trained longer, which must not be taken as their reference)."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from mtpsd.reporting.ablation_report import (
    FAILS, HOLDS, NO_DATA, ablation_claims, ablation_groups, ablation_table, has_ablations, matched_gap,
    paper_sweep, report_section,
)
from mtpsd.errors import MtpsdError
from mtpsd.plotting.data import load_paper_results, read_results
from mtpsd.reporting.summarize import eval_rows

FIX = Path(__file__).parent / "fixtures" / "summary"


@pytest.fixture(scope="module")
def results():
    return read_results(FIX / "ablations_results.csv")


@pytest.fixture(scope="module")
def paper():
    return load_paper_results()


def test_groups_pair_each_ablation_with_the_reference_trained_alike(results):
    groups = ablation_groups(results)
    assert groups == [{"reference": "tiny-abl",
                       "ablations": {"gt": "tiny-gt", "soft": "tiny-soft", "bda": "tiny-bda",
                                     "static_k": "tiny-static-k", "prefix": "tiny-prefix"}}]
    only_default = results[results["run"] == "tiny"]
    assert not has_ablations(only_default) and ablation_groups(only_default) == []


def test_matched_gap_interpolates_the_reference_curve():
    ref = pd.DataFrame({"strategy": ["static", "confadapt", "confadapt"], "param": [1, 0.9, 0.7],
                        "value": [90.0, 80.0, 60.0], "value_se": [1.0, 1.0, 1.0], "eff_k": [1.0, 2.0, 3.0]})
    abl = pd.DataFrame({"strategy": ["confadapt", "confadapt", "static"], "param": [0.9, 0.7, 2],
                        "value": [73.0, 50.0, 10.0], "value_se": [1.0, 1.0, 1.0], "eff_k": [1.5, 4.0, 2.0]})
    g = matched_gap(abl, ref)
    # tau=0.9 at k=1.5: reference 85 -> -12; tau=0.7 at k=4 is outside [1, 3] and is left out
    assert g["n"] == 1 and g["gap"] == pytest.approx(-12.0) and g["se"] == pytest.approx(np.sqrt(2))
    # no ConfAdapt point inside: Static k >= 2 at the same k
    ref2 = pd.concat([ref, pd.DataFrame({"strategy": ["static"], "param": [2], "value": [40.0],
                                         "value_se": [2.0], "eff_k": [2.0]})])
    g2 = matched_gap(abl[abl["strategy"] == "static"], ref2)
    assert g2["basis"].startswith("Static") and g2["gap"] == pytest.approx(-30.0)
    assert matched_gap(abl.iloc[:0], ref) is None


def test_paper_directions_read_off_its_rows(paper):
    ref = paper_sweep(paper, "main")
    assert len(ref) == 20 and set(ref["table"]) == {"math-evals"}
    gaps = {v: matched_gap(paper_sweep(paper, v), ref)["gap"]
            for v in ("GT Suprv.", "Soft Teacher", "BDA", "Static k", "Prefix Loss", "FT Magpie")}
    assert gaps["Static k"] < gaps["BDA"] < gaps["Soft Teacher"] < gaps["GT Suprv."] < 0 < gaps["Prefix Loss"]
    assert gaps["FT Magpie"] < 0


def test_claims_hold_or_fail_by_the_direction(results, paper):
    claims = {c["ablation"]: c for c in ablation_claims(results, paper, "synth_math")}
    assert set(claims) == {"gt", "soft", "bda", "static_k", "prefix"}
    assert all(c["reference"] == "tiny-abl" for c in claims.values())
    # fixture: GT, soft, Static k below the reference, BDA above it, prefix above it
    assert claims["gt"]["status"] == HOLDS and claims["gt"]["ours"]["gap"] == pytest.approx((-12.0 + -4.4) / 2, abs=0.05)
    assert claims["bda"]["status"] == FAILS and claims["bda"]["ours"]["gap"] > 0
    assert claims["prefix"]["status"] == HOLDS and claims["prefix"]["statement"].startswith("prefix (NTP) loss: higher")
    assert claims["static_k"]["status"] == HOLDS
    # no paper row: no data
    no_paper = ablation_claims(results, paper[paper["variant"] != "BDA"], "synth_math")
    assert {c["ablation"]: c["status"] for c in no_paper}["bda"] == NO_DATA


def test_table_has_every_setting_with_standard_errors_beside_the_paper(results, paper):
    lines = ablation_table(results, paper, "synth_math")
    body = lines[2:]
    assert len(body) == 6 * 6  # 6 runs x (step 0 + Static 1, 2, 4 + ConfAdapt 0.9, 0.7)
    gt = [line for line in body if "`tiny-gt`" in line]
    assert [line.split(" | ")[2] for line in gt] == ["step 0, k=1", "Static k=1", "Static k=2", "Static k=4",
                                                     "ConfAdapt τ=0.9", "ConfAdapt τ=0.7"]
    tau09 = gt[4].split(" | ")
    assert tau09[3:] == ["88.0 ± 3.2", "2.40 ± 1.00", "66.4 ± 1.3", "2.20 ± 0.60 |"]
    assert "`tiny`" not in "\n".join(lines)


def test_report_section_and_build_report(results, paper, tmp_path):
    md, nums = report_section(results, paper, "synth_math", "fig.png")
    text = "\n".join(md)
    assert "Direction held on our runs: 4 of 5." in text and "![" in text
    assert nums["ablations.held"] == 4 and nums["ablations.tiny-gt.ours_gap"] < 0
    assert report_section(results[results["run"] == "tiny"], paper, "synth_math", None) == ([], {})
    # the whole report, with figure 11 drawn from the same fixture
    from mtpsd.cli import main

    summary, figures, gen = tmp_path / "summary", tmp_path / "figures", tmp_path / "generated"
    summary.mkdir()
    shutil.copy(FIX / "ablations_results.csv", summary / "results.csv")
    assert main(["plot", "ablations", "--in", str(summary / "results.csv"),
                 "--out", str(figures / "fig11_ablations.png")]) == 0
    assert main(["report", "build", "--summary-dir", str(summary), "--figures-dir", str(figures),
                 "--generated-dir", str(gen), "--out", str(tmp_path / "report.md")]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "## Ablations" in report and "figures/fig11_ablations.png" in report
    assert "| GT supervision (`tiny-gt` vs `tiny-abl`)" in report


def test_figure_one_curve_per_ablation_beside_the_paper(results, paper, tmp_path):
    from mtpsd.plotting.ablations import plot_ablations
    from mtpsd.plotting.style import save_figure

    fig = plot_ablations(results, "synth_math", paper)
    assert len(fig.axes) == 2 and fig.axes[1].get_title().startswith("Paper")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:7] == ["reference (hard teacher)", "GT supervision", "soft teacher", "bidirectional masks (BDA)",
                          "Static k training", "prefix (NTP) loss", "Magpie data"]  # Magpie: the paper's only
    assert len(fig.axes[0].lines) > 6 * 2
    png, _ = save_figure(fig, tmp_path / "fig11.png")
    assert np.asarray(mpimg.imread(png)[..., :3]).std() > 0.05
    with pytest.raises(MtpsdError, match="no ablation run"):
        plot_ablations(results[results["run"] == "tiny"], "synth_math", paper)


def test_summarize_names_the_ablation_from_the_run_config():
    def result(train):
        return {"run": "r", "model": "tiny", "chat_template": False, "task": "mtpsd_synth_math", "ckpt": "final",
                "setting": "static-k1", "strategy": "static", "param": 1, "n_docs": 4,
                "results": {"mtpsd_synth_math": {"exact_match,flexible-extract": 0.5}},
                "provenance": {"config": {"seed": 0, "model": {"name": "tiny"}, "train": {"steps": 8, **train}}}}

    gt, ref = eval_rows(result({"teacher_mode": "gt"}))[0], eval_rows(result({"teacher_mode": "hard"}))[0]
    assert (gt["ablation"], ref["ablation"]) == ("gt", "reference")
    assert gt["ablation_key"] == ref["ablation_key"]
    assert eval_rows(result({"steps": 9}))[0]["ablation_key"] != ref["ablation_key"]
