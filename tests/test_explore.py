"""mtpsd.explore: path resolution, the paper join, decode readers, chunk tables, side by side."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtpsd import explore
from mtpsd.errors import MtpsdError
from mtpsd.plotting.data import load_paper_results, read_results

FIX = Path(__file__).parent / "fixtures" / "summary"


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    (tmp_path / "results" / "summary").mkdir(parents=True)
    for name in ("results.csv", "train_metrics.csv"):
        shutil.copy(FIX / name, tmp_path / "results" / "summary" / name)
    for run in ("b-run", "a-run"):
        (tmp_path / "results" / "runs" / run / "decode").mkdir(parents=True)
    (tmp_path / "results" / "runs" / "no-decodes").mkdir()
    for name in ("static-k1.jsonl", "confadapt-tau0.9.jsonl"):
        shutil.copy(FIX / "decode" / name, tmp_path / "results" / "runs" / "a-run" / "decode" / name)
    return tmp_path / "results"


@pytest.fixture
def decodes() -> dict:
    return explore.load_decodes(FIX / "decode")


def test_paths_precedence(results_dir: Path, tmp_path: Path):
    env = {explore.ENV_RESULTS: str(results_dir)}
    p = explore.explore_paths(env=env)
    assert p.results == results_dir and p.summary == results_dir / "summary"
    assert p.run == "a-run" and p.decode_dir == results_dir / "runs" / "a-run" / "decode"
    assert explore.list_runs(results_dir) == ["a-run", "b-run"]
    p = explore.explore_paths(env={**env, explore.ENV_RUN: "b-run"})
    assert p.decode_dir == results_dir / "runs" / "b-run" / "decode"
    p = explore.explore_paths(env={**env, explore.ENV_DECODE: str(FIX / "decode")})
    assert p.decode_dir == FIX / "decode" and p.run == "summary"
    # an argument beats the environment
    with pytest.raises(MtpsdError, match="no summary folder"):
        explore.explore_paths(tmp_path / "elsewhere", env=env)
    # repository default: the parent holding results/summary, searched from a subfolder
    (tmp_path / "paper").mkdir()
    assert explore.repo_results_dir(tmp_path / "paper") == results_dir


def test_join_with_paper_maps_task_names():
    results = read_results(FIX / "results.csv")
    paper = load_paper_results()
    joined = explore.join_with_paper(results, paper)
    assert set(joined["task"]) == set(results["task"])  # our names are kept
    row = joined[(joined["task"] == "mtpsd_gsm8k_cot") & (joined["strategy"] == "static")
                 & (joined["param"] == 1) & (joined["paper_model"] == "L3.1-8B-Magpie")]
    ref = paper[(paper["task"] == "gsm8k") & (paper["strategy"] == "static") & (paper["param"] == 1)
                & (paper["model"] == "L3.1-8B-Magpie") & (paper["variant"] == "main")]
    assert len(ref) == 1 and len(row) > 0
    assert np.allclose(row["paper_value"], ref["value"].iloc[0])


def test_load_summaries(results_dir: Path):
    s = explore.load_summaries(explore.explore_paths(results_dir))
    assert len(s.results) > 0 and s.train_metrics is not None and len(s.paper) > 0
    (results_dir / "summary" / "train_metrics.csv").unlink()
    assert explore.load_summaries(explore.explore_paths(results_dir)).train_metrics is None


def test_chunk_tables(decodes):
    assert list(decodes) == ["confadapt-tau0.9", "static-k1"]
    counts = explore.chunk_size_counts(decodes)
    ca0 = counts.loc[("confadapt-tau0.9", 0)]
    # fixture row 0: chunk_sizes [1, 4, 2, 1, 3, 5, 1, 2, 1, 3]
    assert (ca0["n=1"], ca0["n=2"], ca0["n=3"], ca0["n=4"], ca0["n=5"]) == (4, 2, 2, 1, 1)
    assert ca0["tokens"] == 23 and ca0["passes"] == 10 and ca0["eff_k"] == pytest.approx(2.3)
    assert (counts.loc["static-k1", "eff_k"] == 1.0).all()
    fig = explore.plot_chunk_distributions(decodes)
    assert sum(len(ax.patches) for ax in fig.axes) > 0
    png = explore.figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_load_decodes_checks(tmp_path: Path):
    with pytest.raises(MtpsdError, match="no decode folder"):
        explore.load_decodes(None)
    with pytest.raises(MtpsdError, match="no decode files"):
        explore.load_decodes(tmp_path)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"tokens": [1, 2, 3], "chunk_sizes": [1, 1]}) + "\n")
    with pytest.raises(MtpsdError, match=r"bad.jsonl: row 1: sum\(chunk_sizes\)=2 != len\(tokens\)=3"):
        explore.load_decodes(tmp_path)


def test_side_by_side(decodes):
    k1, ca = decodes["static-k1"], decodes["confadapt-tau0.9"]
    same = explore.side_by_side(k1, ca, 0)
    assert same.frame.loc["first differing token", "confadapt-tau0.9"] == "-"
    assert same.frame.loc["forward passes", "static-k1"] == 23
    assert same.frame.loc["text (| = chunk boundary)", "confadapt-tau0.9"].startswith("Tom| has 3 apples and| buys 5|")
    assert "<sup" in same._repr_html_() and "identical token sequences" in same.html
    diff = explore.side_by_side(k1, ca, 1)  # the ConfAdapt answer inserts " each" at token 7
    assert diff.frame.loc["first differing token", "static-k1"] == 7
    assert "differ from position 7" in diff.html
    with pytest.raises(MtpsdError, match="prompt index 5 out of range"):
        explore.side_by_side(k1, ca, 5)
    with pytest.raises(MtpsdError, match="id differs"):
        explore.side_by_side(k1, ca[1:], 0)
