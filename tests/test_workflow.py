"""The DAG: dry runs for the default and every overlay, the linter, and (slow) one full
run of the embedded default, shrunk by tests/fixtures/ci.yaml, in a scratch copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
OVERLAYS = {
    "default": [],
    "smol": ["config/smol.yaml"],
    "smol-offline": ["config/smol.yaml", "config/offline.yaml"],
    "paper": ["config/paper.yaml"],
}


def snakemake(*args, cwd=REPO, timeout=600):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.workflow
@pytest.mark.parametrize("name", OVERLAYS)
def test_dry_run_builds_the_dag(name, tmp_path):
    args = ["-n", "--quiet", "rules", "--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile")]
    files = [str(REPO / "config" / "config.yaml")] + [str(REPO / f) for f in OVERLAYS[name]]
    proc = snakemake(*args, "--configfile", *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    for rule in ("prepare_data", "add_mtp_token", "train_mtp", "evaluate", "summarize"):
        assert rule in out, f"{rule} missing from the {name} DAG:\n{out}"


@pytest.mark.workflow
def test_bad_config_stops_the_dag_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  k_maxx: 3\n")
    proc = snakemake("-n", "--configfile", str(REPO / "config" / "config.yaml"), str(bad))
    assert proc.returncode != 0
    assert "k_maxx" in proc.stdout + proc.stderr


@pytest.mark.workflow
def test_lint_is_clean():
    proc = snakemake("--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.workflow
def test_rules_are_snakefmt_formatted():
    snakefmt = str(Path(sys.executable).with_name("snakefmt"))
    proc = subprocess.run([snakefmt, "--check", "Snakefile", "workflow/rules"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
