"""The conda env for --use-conda mirrors pyproject's pins; the CLI lists every verb."""

from __future__ import annotations

import importlib
import tomllib

import yaml

from mtpsd.cli import COMMANDS
from tests.conftest import REPO


def _pins(specs):
    return dict(s.split("==", 1) for s in specs if "==" in s)


def test_conda_env_mirrors_pyproject_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "workflow" / "envs" / "mtp.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _pins(pip) == _pins(project["dependencies"] + project["optional-dependencies"]["gpu"])
    assert _pins(project["dependencies"])["torch"] == "2.13.0"


# Packages whose version can change a reported number: the model stack, lm-eval and what its
# metrics and answer parsing use, statistics, chat-template rendering, weight files.
NUMERIC = ["torch", "transformers", "tokenizers", "datasets", "accelerate", "lm-eval", "rouge-score",
           "numpy", "scipy", "scikit-learn", "sacrebleu", "nltk", "evaluate", "langdetect", "immutabledict",
           "word2number", "sympy", "jinja2", "safetensors", "huggingface-hub", "regex", "pyarrow", "pandas"]


def test_every_package_that_changes_a_number_is_pinned_to_the_installed_version():
    from importlib.metadata import version

    from packaging.version import Version

    pins = _pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    missing = [p for p in NUMERIC if p not in pins]
    assert not missing, f"pin these in pyproject.toml and workflow/envs/mtp.yaml: {missing}"
    # the environment the tests ran in is the pinned one (local labels such as +cpu aside)
    wrong = {p: (pins[p], version(p)) for p in pins if Version(version(p)).public != Version(pins[p]).public}
    assert not wrong, f"installed versions differ from the pins (make install): {wrong}"


def test_the_cluster_extra_is_installed_at_its_pins():
    """`make install` installs the `cluster` extra, so tests/test_slurm.py runs the pinned SLURM
    executor plugin and its job-step half; rules do not need it (the conda env has no copy):
    inside a SLURM job the submitting environment's snakemake runs the rule."""
    from importlib.metadata import version

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = _pins(extras["cluster"])
    assert set(pins) == {"snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep"}
    assert {p: version(p) for p in pins} == pins, "make install (the cluster extra)"


def test_every_cli_verb_has_a_module_with_the_protocol():
    for verb, (module, _help) in COMMANDS.items():
        mod = importlib.import_module(f"mtpsd.cli.{module}")
        assert callable(mod.add_arguments) and callable(mod.run), verb
        assert mod.__doc__ and "mtpsd " + verb in mod.__doc__, f"{verb}: docstring needs an example invocation"


def test_licence_metadata_is_an_spdx_string_with_its_file_and_setuptools_does_not_warn():
    """PEP 639 metadata: the table form `{ text = "MIT" }` made every install print
    setuptools' deprecation warning (no longer supported from 2027-02-18)."""
    import warnings

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert not [str(w.message) for w in caught if "licen" in str(w.message).lower()]
    assert dist.metadata.license_expression == "MIT"
    assert [(REPO / f).is_file() for f in dist.metadata.license_files] == [True]
