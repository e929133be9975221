"""Every figure function draws a non-empty image from the fixture summaries."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from mtpsd.errors import MtpsdError
from mtpsd.io import read_jsonl
from mtpsd.plotting import FIGURES
from mtpsd.plotting.data import choose_task, load_paper_results, read_results, read_train_metrics
from mtpsd.plotting.style import save_figure

FIX = Path(__file__).parent / "fixtures" / "summary"


@pytest.fixture(scope="module")
def results():
    return read_results(FIX / "results.csv")


def _check_saved(fig, tmp_path: Path, stem: str, min_px: int = 300) -> None:
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    n_artists = sum(len(ax.lines) + len(ax.collections) + len(ax.patches) + len(ax.images) + len(ax.texts)
                    for ax in axes)
    assert n_artists > 0, "figure has no data artists"
    png, pdf = save_figure(fig, tmp_path / f"{stem}.png")
    assert pdf.stat().st_size > 1000
    img = mpimg.imread(png)
    h, w = img.shape[:2]
    assert w >= min_px and h >= 150
    assert np.asarray(img[..., :3]).std() > 0.05, "image is blank"


def test_pareto(results, tmp_path):
    from mtpsd.plotting.pareto import pareto_front, plot_pareto

    task = choose_task(results)
    assert task == "mtpsd_gsm8k_cot"  # the GSM8K-like task wins over the summarisation task
    fig = plot_pareto(results, task, load_paper_results())
    assert len(fig.axes) == 2
    assert fig.axes[1].get_title().startswith("Paper")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"tiny", "tiny-static", "Static k", "ConfAdapt", "Pareto frontier"} <= set(labels)
    _check_saved(fig, tmp_path, "fig05_pareto")


def test_flat_zero_accuracy_gets_a_readable_axis(results):
    """A model scoring 0% everywhere (SmolLM2 on GSM8K) gets a 0-based percent axis, not
    matplotlib's zoom into rounding noise."""
    from mtpsd.plotting.pareto import plot_pareto
    from mtpsd.plotting.steps import plot_accuracy_steps

    zero = results.assign(value=0.0, value_se=0.0)
    for fig in (plot_pareto(zero, "mtpsd_gsm8k_cot"), plot_accuracy_steps(zero, "mtpsd_gsm8k_cot")):
        lo, hi = fig.axes[0].get_ylim()
        assert lo == pytest.approx(-1.0) and hi == pytest.approx(9.0)
    lo, hi = plot_pareto(results, "mtpsd_gsm8k_cot").axes[0].get_ylim()
    assert hi - lo > 10  # real spreads keep matplotlib's limits


def test_pareto_front():
    from mtpsd.plotting.pareto import pareto_front

    x = np.array([1, 2, 3, 2.5, 4])
    y = np.array([60, 58, 50, 55, 49])  # (2.5, 55) beats (3, 50)? no: 3 > 2.5; nothing dominates it
    idx = pareto_front(x, y)
    assert list(idx) == [0, 1, 3, 2, 4]
    y2 = np.array([60, 58, 50, 57, 49])
    assert 2 in pareto_front(x, y2)
    assert list(pareto_front([1, 2], [50, 40])) == [0, 1]
    assert list(pareto_front([1, 2], [50, 60])) == [1]


@pytest.mark.parametrize("y", ["value", "eff_k"])
def test_over_steps(results, tmp_path, y):
    from mtpsd.plotting.steps import plot_over_steps

    fig = plot_over_steps(results, "mtpsd_gsm8k_cot", y=y)
    assert len(fig.axes) == 2  # one panel per run
    # one line per setting of run "tiny": static k=1..5, 6 taus, verify -> 12 errorbar lines + baseline
    assert len(fig.axes[0].containers) == 12
    _check_saved(fig, tmp_path, f"steps_{y}")


def test_wallclock(results, tmp_path):
    from mtpsd.plotting.wallclock import plot_wallclock, wallclock_speedups

    sp = wallclock_speedups(results, "mtpsd_gsm8k_cot")
    k1 = sp[(sp["strategy"] == "static") & (sp["param"] == 1)]
    assert np.allclose(k1["speedup"], 1.0)
    fig = plot_wallclock(results, "mtpsd_gsm8k_cot")
    _check_saved(fig, tmp_path, "fig09_wallclock")
    with pytest.raises(MtpsdError, match="Static k=1"):
        wallclock_speedups(results[results["param"] != 1], "mtpsd_gsm8k_cot")


def test_training(tmp_path):
    from mtpsd.plotting.training import plot_training

    m = read_train_metrics(FIX / "train_metrics.csv")
    fig = plot_training(m)
    # run tiny: 4 positions; tiny-static: 3 (j=4 absent) -> 7 agreement lines + 2 style keys
    assert len(fig.axes[1].lines) == 9
    _check_saved(fig, tmp_path, "fig10_training")


def test_confidence_quality(tmp_path):
    from mtpsd.plotting.confidence import correlation, plot_confidence_quality

    df = pd.read_csv(FIX / "confidence_quality_tiny.csv")
    c = correlation(df)
    assert c["n"] == len(df) and c["spearman_rho"] < -0.5
    fig = plot_confidence_quality(df)
    assert "Spearman" in fig.axes[0].get_title()
    _check_saved(fig, tmp_path, "fig06_confidence_quality")


def test_chunks(tmp_path):
    from mtpsd.plotting.chunks import chunk_texts, pick_row, plot_chunks

    row = pick_row(read_jsonl(FIX / "decode_confadapt.jsonl"))
    texts = chunk_texts(row)
    assert len(texts) == len(row["chunk_sizes"]) and "".join(texts) == "".join(row["token_strs"])
    fig = plot_chunks(row)
    size_labels = [t.get_text() for t in fig.axes[0].texts if t.get_text().isdigit()]
    assert size_labels == [str(n) for n in row["chunk_sizes"]]
    _check_saved(fig, tmp_path, "fig01_chunks")
    with pytest.raises(MtpsdError, match="token_strs"):
        chunk_texts({"chunk_sizes": [1]})
    with pytest.raises(MtpsdError, match="sum"):
        chunk_texts({"token_strs": ["a"], "chunk_sizes": [2]})


def test_layout_figures(tmp_path):
    from mtpsd.plotting.layout_figs import example_layout, plot_layout, plot_mask_k, plot_mask_offsets

    lay, vocab = example_layout([2, 7], 3)
    assert lay.input_ids.shape[1] == 14 + 2 * 2
    assert [vocab[t] for t in lay.targets_gt[0, lay.readout[0]].tolist()] == ["pens", ",", "buys", "3", "+", "5"]
    _check_saved(plot_layout(), tmp_path, "fig02_layout")
    for stem, fig in (("fig03", plot_mask_offsets()), ("fig04", plot_mask_k())):
        assert len(fig.axes) == 2 and all(len(ax.images) == 1 for ax in fig.axes)
        _check_saved(fig, tmp_path, stem)


def test_cli_plot_all(tmp_path):
    from mtpsd.cli import main

    inputs = {"chunks": FIX / "decode_confadapt.jsonl", "confidence-quality": FIX / "confidence_quality_tiny.csv",
              "training": FIX / "train_metrics.csv"}
    for name, (stem, _) in FIGURES.items():
        argv = ["plot", name, "--out", str(tmp_path / f"{stem}.png")]
        if name not in ("layout", "mask-offsets", "mask-k"):
            argv += ["--in", str(inputs.get(name, FIX / "results.csv"))]
        assert main(argv) == 0, name
        assert (tmp_path / f"{stem}.png").is_file() and (tmp_path / f"{stem}.pdf").is_file()
    assert main(["plot", "pareto", "--in", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x.png")]) == 2


def test_score_prefix_same_model_first_position(tiny_llama):
    """With teacher == student, position 1 sees the same prefix: agreement 1, nll_1 = -log conf_1."""
    from mtpsd.evaluation.confidence_quality import score_prefix

    model = tiny_llama(vocab_size=48, seed=3)
    mtp = model.config.mtp_token_id
    res = score_prefix(model, model, [1, 5, 9, 12, 7], k=4, mtp_token_id=mtp, banned=[mtp])
    assert len(res["proposal"]) == 4 and mtp not in res["proposal"]
    assert res["nll_per_pos"][0] == pytest.approx(-np.log(res["conf_per_pos"][0]), rel=1e-5)
    assert 0 < res["conf_prod"] <= res["conf_min"] <= res["conf_mean"] <= 1
    assert 0.25 <= res["teacher_agreement"] <= 1
