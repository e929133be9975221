"""The paper's ablations as named runs: each run's resolved config sets the option it names,
and nothing else differs from its reference but that option (and the data for Magpie)."""

from __future__ import annotations

import pytest

from mtpsd.ablations import OPTIONS, REFERENCE, ablation_key, ablation_of
from mtpsd.config import load_config
from tests.conftest import REPO

CONFIG = REPO / "config" / "config.yaml"
TINY = [CONFIG, REPO / "config" / "ablations.yaml"]
PAPER = [CONFIG, REPO / "config" / "paper.yaml", REPO / "config" / "paper_ablations.yaml"]

TINY_RUNS = {"tiny-abl": REFERENCE, "tiny-gt": "gt", "tiny-soft": "soft", "tiny-bda": "bda",
             "tiny-static-k": "static_k", "tiny-prefix": "prefix"}
PAPER_RUNS = {"l3-magpie": REFERENCE, "l3-magpie-gt": "gt", "l3-magpie-soft": "soft",
              "l3-magpie-bda": "bda", "l3-magpie-static-k": "static_k", "l3-magpie-prefix": "prefix",
              "l3-magpie-magpie": "magpie"}


def _option(cfg, name):
    section, key, value = OPTIONS[name]
    return getattr(getattr(cfg, section), key), value


@pytest.mark.parametrize("files,runs,reference", [(TINY, TINY_RUNS, "tiny-abl"),
                                                  (PAPER, PAPER_RUNS, "l3-magpie")], ids=["tiny", "paper"])
def test_each_ablation_run_resolves_to_the_option_it_names(files, runs, reference):
    assert set(runs) <= set(load_config(files).run_names)
    ref = load_config(files, run=reference)
    for run, name in runs.items():
        cfg = load_config(files, run=run)
        assert ablation_of(cfg) == name, run
        assert ablation_key(cfg) == ablation_key(ref), f"{run} is not trained like {reference}"
        if name != REFERENCE:
            got, want = _option(cfg, name)
            assert got == want, f"{run}: {OPTIONS[name][:2]} = {got!r}, expected {want!r}"
            assert _option(ref, name)[0] != want
    static = load_config(files, run=[r for r, n in runs.items() if n == "static_k"][0])
    assert static.train.random_k is False


def test_tiny_ablations_share_their_reference_budget_and_leave_the_default_alone():
    default = load_config([CONFIG], run="tiny")
    sections = ("seed", "data", "model", "train", "decode", "eval")
    got, want = load_config(TINY, run="tiny").to_dict(), default.to_dict()
    assert {s: got[s] for s in sections} == {s: want[s] for s in sections}
    ref = load_config(TINY, run="tiny-abl")
    for run in TINY_RUNS:
        cfg = load_config(TINY, run=run)
        assert (cfg.train.steps, cfg.eval.limit, cfg.decode.static_k, cfg.decode.confadapt_tau) == (
            ref.train.steps, ref.eval.limit, ref.decode.static_k, ref.decode.confadapt_tau)
        assert cfg.train.steps < default.train.steps


def test_paper_data_ablation_is_magpie_with_the_papers_length_and_batch():
    cfg = load_config(PAPER, run="l3-magpie-magpie")
    assert cfg.data.source == "magpie"
    assert cfg.data.magpie_sources == ["Magpie-Align/Magpie-Pro-300K-Filtered", "Magpie-Align/Magpie-Reasoning-150K"]
    assert (cfg.train.max_length, cfg.train.global_batch_size) == (1024, 16)
    assert cfg.model.pretrained == "Magpie-Align/Llama-3.1-8B-Magpie-Align-SFT-v0.1"


def test_several_options_name_every_ablation():
    cfg = load_config(TINY, run="tiny-gt").to_dict()
    cfg["train"]["attention"] = "bidirectional"
    assert ablation_of(cfg) == "gt+bda"
