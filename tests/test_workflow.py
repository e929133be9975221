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
    "seeds": ["config/seeds.yaml"],
    "paper-1gpu": ["config/paper.yaml", "config/paper_1gpu.yaml"],
    "ablations": ["config/ablations.yaml"],
    "paper-ablations": ["config/paper.yaml", "config/paper_ablations.yaml"],
}


# the venv's bin first: `mtpsd` for the rules, `shfmt` (shfmt-py) for snakefmt
VENV_ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def snakemake(*args, cwd=REPO, timeout=600):
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=VENV_ENV)


def _scratch_copy(dest: Path) -> None:
    """The workflow files of the repository (the package itself is installed)."""
    for name in ("Snakefile", "workflow", "config", "profiles", "tests/fixtures/ci.yaml"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)


@pytest.mark.workflow
@pytest.mark.parametrize("name", OVERLAYS)
def test_dry_run_builds_the_dag(name, tmp_path):
    _scratch_copy(tmp_path)
    args = ["-n", "--quiet", "rules"]
    if OVERLAYS[name]:
        args += ["--configfile", *OVERLAYS[name]]
    proc = snakemake(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    for rule in ("prepare_data", "add_mtp_token", "train_mtp", "evaluate", "summarize"):
        assert rule in out, f"{rule} missing from the {name} DAG:\n{out}"


@pytest.mark.workflow
def test_seed_runs_pretrain_their_own_base_model_from_their_own_seed(tmp_path):
    _scratch_copy(tmp_path)
    proc = snakemake("-n", "-p", "--configfile", "config/seeds.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for n in range(1, 5):
        assert (f"--config results/runs/tiny-seed{n}/config.json" in out
                and f"--out results/models/tiny-seed{n}" in out), f"seed {n} has no base model of its own"
    assert out.count("rule pretrain_base:") == 5 and out.count("rule train_mtp:") == 5


@pytest.mark.workflow
def test_published_overlay_evaluates_without_training(tmp_path):
    _scratch_copy(tmp_path)
    proc = snakemake("-n", "--quiet", "rules", "--configfile", "config/paper.yaml", "config/published.yaml",
                     cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    jobs = dict(line.split()[:2] for line in out.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit())
    assert jobs["import_checkpoint"] == "2" and int(jobs["evaluate"]) > 0, out
    assert "train_mtp" not in jobs and "add_mtp_token" not in jobs, out


@pytest.mark.workflow
def test_bad_config_stops_the_dag_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  k_maxx: 3\n")
    _scratch_copy(tmp_path)
    proc = snakemake("-n", "--configfile", str(bad), cwd=tmp_path)
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
                          capture_output=True, text=True, env=VENV_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.workflow
def test_full_dag_runs_end_to_end(tmp_path):
    """Every rule runs for real on the shrunk default: data, tiny base model, <MTP>,
    training, decoding, the evaluation sweep, summaries, every figure and the report."""
    _scratch_copy(tmp_path)
    proc = snakemake("--cores", "2", "--configfile", "tests/fixtures/ci.yaml",
                     cwd=tmp_path, timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    figures = sorted((tmp_path / "figures").glob("fig*.png"))
    assert len(figures) == 10 and all(f.stat().st_size > 5000 for f in figures)
    report = (tmp_path / "paper" / "report.md").read_text()
    assert "Static" in report and "ConfAdapt" in report
    import pandas as pd

    results = pd.read_csv(tmp_path / "results" / "summary" / "results.csv")
    assert {"static", "confadapt", "verify", "baseline_step0"} <= set(results["strategy"])
    # a second invocation finds nothing to do
    again = snakemake("-n", "--configfile", "tests/fixtures/ci.yaml", cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


@pytest.mark.workflow
def test_ablation_overlay_adds_its_runs_and_figure_11_only(tmp_path):
    """The shrunk CI default plus config/ablations.yaml (dry run; the real ablation DAG is too
    long for the suite): six ablation-family runs train and evaluate, figure 11 is drawn;
    without the overlay there is no figure 11."""
    _scratch_copy(tmp_path)
    proc = snakemake("-n", "-p", "--configfile", "tests/fixtures/ci.yaml", "config/ablations.yaml", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for run in ("tiny-abl", "tiny-gt", "tiny-soft", "tiny-bda", "tiny-static-k", "tiny-prefix"):
        assert f"--out results/runs/{run}/checkpoint" in out, run
    assert "mtpsd plot ablations" in out and "figures/fig11_ablations.png" in out
    plain = snakemake("-n", "-p", "--configfile", "tests/fixtures/ci.yaml", cwd=tmp_path)
    assert plain.returncode == 0 and "fig11_ablations" not in plain.stdout + plain.stderr


@pytest.mark.workflow
def test_magpie_ablation_trains_on_its_own_data(tmp_path):
    """A run whose data differs from the global data (the Magpie ablation) gets its own
    prepared split; the others train on results/data/train.jsonl."""
    _scratch_copy(tmp_path)
    proc = snakemake("-n", "-p", "--configfile", "config/paper.yaml", "config/paper_ablations.yaml",
                     cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "results/runs/l3-magpie-magpie/data/train.jsonl" in out
    assert "--train results/runs/l3-magpie-magpie/data/train.jsonl" in out
    assert "--train results/data/train.jsonl" in out
    assert "results/runs/l3-magpie-gt/data/" not in out
