"""Config: the YAML files load through the library; bad keys and values name the key."""

from __future__ import annotations

import json

import pytest
import yaml

from mtpsd.cli import main
from mtpsd.config import ConfigError, load_config, load_resolved, read_yaml, resolve
from mtpsd.config.schema import render
from tests.conftest import REPO

CONFIG = REPO / "config" / "config.yaml"
OVERLAYS = sorted(p for p in (REPO / "config").glob("*.yaml") if p.name != "config.yaml")


def test_default_config_loads_every_run():
    cfg = load_config([CONFIG])
    assert cfg.run_names
    for run in cfg.run_names:
        assert load_config([CONFIG], run=run).run == run


def _stack(overlay) -> list:
    """config.yaml, the base profile the overlay requires (if any), the overlay."""
    base = read_yaml(overlay).get("requires")
    return [CONFIG, *([REPO / "config" / f"{base}.yaml"] if base else []), overlay]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlays_load_every_run(overlay):
    cfg = load_config(_stack(overlay))
    for run in cfg.run_names:
        load_config(_stack(overlay), run=run)


def test_overlays_that_need_the_paper_profile_refuse_without_it():
    """`--configfile config/paper_ablations.yaml` alone once built an 8B run on synthetic data;
    now every overlay that goes on top of paper.yaml says so and stops without it."""
    needing = sorted(p.name for p in OVERLAYS if read_yaml(p).get("requires") == "paper")
    assert needing == ["general.yaml", "l3_magpie.yaml", "paper_1gpu.yaml", "paper_ablations.yaml",
                       "published.yaml", "qwen3_4b.yaml"]
    for name in needing:
        with pytest.raises(ConfigError, match=r"requires: paper: .*config/paper\.yaml.*missing"):
            load_config([CONFIG, REPO / "config" / name])
    assert read_yaml(REPO / "config" / "paper.yaml")["profile"] == "paper"
    with pytest.raises(ConfigError, match=r"runs\.x\.requires: cannot be overridden per run"):
        resolve({"run_names": ["x"], "runs": {"x": {"requires": "paper"}}}, "x")


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.kmax' \(did you mean 'train\.k_max'\?\)"):
        resolve({"runs": {"tiny": {}}, "train": {"kmax": 4}})


def test_unknown_key_inside_a_run_is_named():
    with pytest.raises(ConfigError, match=r"'decode\.tauu'"):
        resolve({"runs": {"tiny": {"decode": {"tauu": 0.9}}}})


@pytest.mark.parametrize(
    "raw, pattern",
    [
        ({"train": {"lr": -1.0}}, r"train\.lr: must be > 0"),
        ({"train": {"k_max": "eight"}}, r"train\.k_max: expected int"),
        ({"train": {"teacher_mode": "medium"}}, r"train\.teacher_mode"),
        ({"decode": {"confadapt_tau": [0.9, 1.5]}}, r"decode\.confadapt_tau"),
        ({"model": {"source": "pretrained"}}, r"model\.pretrained"),
        ({"run_names": ["nope"]}, r"run_names: 'nope' has no entry under runs"),
    ],
)
def test_bad_values_name_the_key(raw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        resolve({"runs": {"tiny": {}}, **raw})


def test_run_overrides_merge_over_sections():
    raw = {"train": {"k_max": 8, "lr": 1e-3}, "runs": {"a": {"train": {"k_max": 4}}}, "run_names": ["a"]}
    cfg = resolve(raw, "a")
    assert (cfg.train.k_max, cfg.train.lr) == (4, 1e-3)


def test_missing_config_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([tmp_path / "nope.yaml"])


def test_resolve_config_cli_roundtrip(tmp_path, capsys):
    out = tmp_path / "results" / "runs" / "tiny" / "config.json"
    assert main(["resolve-config", "--config", str(CONFIG), "--run", "tiny", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["run"] == "tiny" and "git_sha" in data["provenance"]
    assert load_resolved(out) == load_config([CONFIG], run="tiny")


def test_resolve_config_cli_bad_key_keeps_existing_output(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"k_maxx": 3}}))
    out = tmp_path / "config.json"
    out.write_text("previous")
    assert main(["resolve-config", "--config", str(CONFIG), "--config", str(bad), "--out", str(out)]) == 2
    assert "train.k_maxx" in capsys.readouterr().err
    assert out.read_text() == "previous"


def test_committed_schema_matches_dataclasses():
    committed = (REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert committed == render(), "regenerate: python -m mtpsd.config.schema > workflow/schemas/config.schema.yaml"


def test_decode_k_max_defaults_to_the_trained_k_max():
    cfg = resolve({"runs": {"a": {"train": {"k_max": 4}}}, "run_names": ["a"], "train": {"k_max": 8}}, "a")
    assert cfg.decode.k_max == 4
    cfg = resolve({"runs": {"a": {}}, "run_names": ["a"], "decode": {"k_max": 2}}, "a")
    assert cfg.decode.k_max == 2


def test_refresh_resolved_rewrites_only_stale_files(tmp_path):
    """The workflow's pre-DAG refresh: a missing file is left to the resolve rule, an
    up-to-date one is not touched, a stale one (an overlay, an edited value) is rewritten
    with the current values and provenance."""
    from mtpsd.config import deep_merge, merge_sources
    from mtpsd.config.resolved import refresh_resolved, resolved_values, write_resolved

    raw = merge_sources([REPO / "config" / "config.yaml"])
    cfg = resolve(raw, "tiny")
    path = tmp_path / "config.json"
    assert refresh_resolved(path, cfg) is False and not path.exists()
    write_resolved(path, cfg)
    before = path.read_text()
    assert refresh_resolved(path, cfg) is False and path.read_text() == before
    edited = resolve(deep_merge(raw, {"decode": {"max_new_tokens": 20}}), "tiny")
    assert refresh_resolved(path, edited) is True
    on_disk = json.loads(path.read_text())
    assert on_disk.pop("provenance") and on_disk == resolved_values(edited)
    assert on_disk["decode"]["max_new_tokens"] == 20
    path.write_text("not json")
    assert refresh_resolved(path, cfg) is True and json.loads(path.read_text())["decode"]["max_new_tokens"] == 160
