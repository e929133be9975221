"""Configuration: dataclasses that own every default, and the loader.

The YAML files under ``config/`` list values; these dataclasses own the defaults
and range checks. A config is the default ``config/config.yaml`` with overlays
deep-merged on top (``--configfile config/smol.yaml``), then one named run's
overrides from ``runs:`` merged in::

    from mtpsd.config import load_config
    cfg = load_config(["config/config.yaml", "config/smol.yaml"], run="smol")
    cfg.train.k_max
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mtpsd.config.base import ConfigError, check, deep_merge, field, from_dict, to_dict
from mtpsd.config.data import DataConfig, SyntheticConfig
from mtpsd.config.decode import DecodeConfig
from mtpsd.config.eval import EvalConfig
from mtpsd.config.model import ModelConfig, PretrainConfig, TinyModelConfig
from mtpsd.config.train import TrainConfig
from mtpsd.published import apply_published_defaults, check_checkpoint_source

__all__ = [
    "Config", "ConfigError", "DataConfig", "DecodeConfig", "EvalConfig", "ModelConfig",
    "PretrainConfig", "SyntheticConfig", "TinyModelConfig", "TrainConfig",
    "deep_merge", "load_config", "merge_sources", "read_yaml", "resolve", "load_resolved",
    "SEED_REPLICATE", "seed_base",
]

# A seed replicate of run (or model) <base> is named <base>-seed<N> (config/seeds.yaml): the same
# config but for its seeds. The report groups replicates (mtpsd.reporting.seed_spread) and the
# plan times them with <base>'s speed figures (mtpsd.evaluation.plan).
SEED_REPLICATE = re.compile(r"^(?P<base>.+)-seed(?P<seed>\d+)$")


def seed_base(name: str) -> str:
    """``<base>`` of a seed replicate's name ``<base>-seed<N>`` (a run or model name), else the name."""
    m = SEED_REPLICATE.match(name)
    return m.group("base") if m else name


@dataclass
class Config:
    seed: int = field(0, help="global seed (data split, generator, model init)")
    profile: str | None = field(
        None, help="name of the base profile a config file sets up (config/paper.yaml: paper), for overlays "
                   "that only work on top of it (`requires`)"
    )
    requires: str | None = field(
        None, help="an overlay that only works on top of a base profile names it (e.g. paper): the config "
                   "refuses to resolve unless `profile` (set by config/<name>.yaml, given first) is that name"
    )
    run_names: list[str] = field(default_factory=lambda: ["tiny"], help="runs the DAG trains and evaluates")
    runs: dict[str, Any] = field(default_factory=dict, help="run name -> overrides of the sections below")
    run: str | None = field(None, help="the run this resolved config belongs to (set by the loader)")
    checkpoint: str | None = field(
        None, help="MTP checkpoint (hub id, directory or .gguf) to import and evaluate instead of training; "
                   "null = train. The authors' published checkpoints (mtpsd.published.PUBLISHED) also set "
                   "the run's model keys and train.k_max"
    )
    mtp_token: str | int | None = field(
        None, help="mask token of a `checkpoint` whose config has no mtp_token_id and that is not in the "
                   "published registry: its token string, or its integer id"
    )
    data: DataConfig = field(default_factory=DataConfig, help="datasets")
    model: ModelConfig = field(default_factory=ModelConfig, help="base model")
    train: TrainConfig = field(default_factory=TrainConfig, help="self-distillation")
    decode: DecodeConfig = field(default_factory=DecodeConfig, help="decoding")
    eval: EvalConfig = field(default_factory=EvalConfig, help="evaluation")

    def __post_init__(self):
        check(len(self.run_names) > 0, "run_names", "must list at least one run")
        for name in self.run_names:
            check(isinstance(name, str) and name and "/" not in name, "run_names", f"bad run name {name!r}")
        for name, overrides in self.runs.items():
            check(isinstance(overrides, dict) or overrides is None, f"runs.{name}", "must be a mapping")
        if self.decode.k_max is None:  # decode as far ahead as the model was trained to
            self.decode.k_max = self.train.k_max

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def resolve(raw: dict, run: str | None = None) -> Config:
    """Validate a merged config dict; with ``run``, apply that run's overrides.

    A run must be listed under ``runs:`` (its overrides may be empty). A ``checkpoint``
    in the published registry fills the model keys it implies (the run's own keys win;
    ``mtpsd.published.apply_published_defaults``); any other checkpoint must make its
    ``<MTP>`` id findable (``mtp_token``), checked here before the DAG runs.
    """
    raw = copy.deepcopy(raw)
    if run is not None:
        runs = raw.get("runs") or {}
        if run not in runs:
            raise ConfigError(f"runs: no run named '{run}' (known: {', '.join(runs) or 'none'})")
        for key in ("runs", "run_names", "run", "seed", "profile", "requires"):
            if key in (runs[run] or {}) and key != "seed":
                raise ConfigError(f"runs.{run}.{key}: cannot be overridden per run")
        raw = deep_merge(raw, runs[run] or {})
        raw = apply_published_defaults(raw, runs[run] or {})
        raw["run"] = run
    else:
        raw = apply_published_defaults(raw, {})
    cfg = from_dict(Config, raw)
    if cfg.requires is not None and cfg.requires != cfg.profile:
        raise ConfigError(
            f"requires: {cfg.requires}: an overlay here goes on top of config/{cfg.requires}.yaml, which is "
            f"missing (profile: {cfg.profile}); give it first, e.g. --configfile config/{cfg.requires}.yaml "
            f"<overlay> (Snakemake) or --config config/config.yaml --config config/{cfg.requires}.yaml "
            "--config <overlay> (mtpsd)")
    check_checkpoint_source(cfg.checkpoint, cfg.mtp_token, f"runs.{run}.checkpoint" if run else "checkpoint")
    if run is None:
        for name in cfg.run_names:  # fail at DAG start, not when the run is reached
            if name not in cfg.runs:
                raise ConfigError(f"run_names: '{name}' has no entry under runs:")
            resolve(raw, name)
    return cfg


def merge_sources(paths: list[str | Path], json_text: str | None = None) -> dict:
    """YAML files (later ones overlay earlier ones), then a merged config as a JSON string on
    top (what Snakemake passes the CLIs), as one raw dict (not yet resolved)."""
    raw: dict = {}
    for p in paths:
        raw = deep_merge(raw, read_yaml(p))
    if json_text:
        try:
            raw = deep_merge(raw, json.loads(json_text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"--json: not valid JSON ({e})") from None
    return raw


def load_config(paths: list[str | Path], run: str | None = None) -> Config:
    """Read YAML files (later ones overlay earlier ones) and resolve."""
    return resolve(merge_sources(paths), run)


def load_resolved(path: str | Path) -> Config:
    """Load a resolved config JSON written by ``mtpsd resolve-config``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: resolved config not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    raw.pop("provenance", None)
    return from_dict(Config, raw)
