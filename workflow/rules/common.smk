# Helpers shared by all rules: config validation, per-run configs, routing.
# No rules here. Paths in validate() are relative to this file.

import json

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from mtpsd.config import resolve
from mtpsd.errors import MtpsdError


validate(config, schema="../schemas/config.schema.yaml")

try:
    CFG = resolve(config)
    RUN_CFG = {run: resolve(config, run) for run in CFG.run_names}
except MtpsdError as err:
    raise WorkflowError(f"bad config: {err}")

RUNS = list(CFG.run_names)
NEVER = "(?!x)x"  # a regex that matches nothing (empty alternation guard)


def names_regex(names):
    """Wildcard constraint matching exactly the given names."""
    return "|".join(sorted(set(names))) or NEVER


SCRATCH_MODELS = [c.model.name for c in RUN_CFG.values() if c.model.source == "scratch"]
PRETRAINED_MODELS = [c.model.name for c in RUN_CFG.values() if c.model.source == "pretrained"]


def config_json():
    """The merged Snakemake config, passed to `mtpsd resolve-config`."""
    return json.dumps(config, sort_keys=True)


def section_params(run, *sections):
    """JSON of the config sections a rule depends on: a params entry, so that editing
    one section re-runs only the steps that read it (config JSON inputs are ancient())."""
    cfg = CFG.to_dict() if run is None else RUN_CFG[run].to_dict()
    return json.dumps({s: cfg[s] for s in sections}, sort_keys=True)


def base_model_dir(wildcards):
    """Base model directory of a run (trained from scratch or imported)."""
    return f"results/models/{RUN_CFG[wildcards.run].model.name}"


def model_config_params(wildcards):
    """Config sections that decide how base model `wildcards.model` is built."""
    run = next(r for r, c in RUN_CFG.items() if c.model.name == wildcards.model)
    return section_params(run, "seed", "data", "model")
