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
    for name in ("workflow", "config", "tests/fixtures/ci.yaml"):
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
def test_several_trainings_share_the_cores(tmp_path):
    """One run trains on both cores; the seeds overlay's five train one thread each, two at a time."""
    _scratch_copy(tmp_path)
    default = snakemake("-n", "-p", "--cores", "2", cwd=tmp_path)
    seeds = snakemake("-n", "-p", "--cores", "2", "--configfile", "config/seeds.yaml", cwd=tmp_path)
    assert default.returncode == 0 and seeds.returncode == 0, default.stderr + seeds.stderr
    assert default.stdout.count("--threads 2") == 1 and default.stdout.count("threads: 2") == 2  # pretrain, train
    assert seeds.stdout.count("--threads 1") == 5 and "threads: 2" not in seeds.stdout
    wide = snakemake("-n", "-p", "--cores", "16", "--configfile", "config/seeds.yaml", cwd=tmp_path)
    assert wide.stdout.count("threads: 3") == 5, "16 cores over 5 trainings: 3 threads each"


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
    proc = subprocess.run([snakefmt, "--check", "workflow/Snakefile", "workflow/rules", "tests/fixtures/gpu_limit"],
                          cwd=REPO,
                          capture_output=True, text=True, env=VENV_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def ci_dag(tmp_path_factory):
    """A scratch copy after one real run of the shrunk default (tests/fixtures/ci.yaml)."""
    root = tmp_path_factory.mktemp("dag")
    _scratch_copy(root)
    proc = snakemake("--cores", "2", "--configfile", "tests/fixtures/ci.yaml", cwd=root, timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return root


@pytest.mark.slow
@pytest.mark.workflow
def test_full_dag_runs_end_to_end(ci_dag):
    """Every rule runs for real on the shrunk default: data, tiny base model, <MTP>,
    training, decoding, the evaluation sweep, summaries, every figure and the report."""
    figures = sorted((ci_dag / "figures").glob("fig*.png"))
    assert len(figures) == 10 and all(f.stat().st_size > 5000 for f in figures)
    report = (ci_dag / "paper" / "report.md").read_text()
    assert "Static" in report and "ConfAdapt" in report and "## Ablations" not in report
    import pandas as pd

    results = pd.read_csv(ci_dag / "results" / "summary" / "results.csv")
    assert {"static", "confadapt", "verify", "baseline_step0"} <= set(results["strategy"])
    # a second invocation finds nothing to do
    again = snakemake("-n", "--configfile", "tests/fixtures/ci.yaml", cwd=ci_dag)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


ABLATION_RUNS = ("tiny-abl", "tiny-gt", "tiny-soft", "tiny-bda", "tiny-static-k", "tiny-prefix")


@pytest.mark.slow
@pytest.mark.workflow
def test_ablation_overlay_runs_end_to_end(ci_dag):
    """config/ablations.yaml on top of the shrunk default, shrunk itself by
    tests/fixtures/ci_ablations.yaml, runs for real: the six ablation-family runs train,
    decode as trained (BDA with its masks attending both ways) and are evaluated, and the
    report gains the ablation table, claims and figure 11; the default's outputs are reused."""
    overlay = ("tests/fixtures/ci.yaml", "config/ablations.yaml", "tests/fixtures/ci_ablations.yaml")
    shutil.copy(REPO / overlay[-1], ci_dag / overlay[-1])
    before = (ci_dag / "results" / "runs" / "tiny" / "checkpoint").stat().st_mtime
    proc = snakemake("--cores", "2", "--configfile", *overlay, cwd=ci_dag, timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert (ci_dag / "results" / "runs" / "tiny" / "checkpoint").stat().st_mtime == before
    import pandas as pd

    results = pd.read_csv(ci_dag / "results" / "summary" / "results.csv")
    final = results[results["strategy"] != "baseline_step0"]
    for run in ABLATION_RUNS:
        sweep = final[final["run"] == run]
        assert set(sweep["strategy"]) == {"static", "confadapt"}, run
        assert sorted(set(sweep[sweep["strategy"] == "static"]["param"])) == [1, 2, 4], run
    ablation_of = results.drop_duplicates("run").set_index("run")["ablation"]
    assert [ablation_of[run] for run in ABLATION_RUNS] == ["reference", "gt", "soft", "bda", "static_k", "prefix"]
    report = (ci_dag / "paper" / "report.md").read_text()
    section = report[report.index("## Ablations"):]
    assert "### The paper's ablation claims on our runs" in section
    for run in ABLATION_RUNS[1:]:  # each compared with the family's own reference, not with `tiny`
        assert f"(`{run}` vs `tiny-abl`)" in section, run
    fig = ci_dag / "figures" / "fig11_ablations.png"
    assert fig.exists() and fig.stat().st_size > 5000
    again = snakemake("-n", "--configfile", *overlay, cwd=ci_dag)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.workflow
def test_an_edited_value_reruns_the_steps_that_read_it_in_one_invocation(ci_dag, tmp_path):
    """Resolved configs are refreshed before the DAG is built (no resolve job re-runs on a
    params change, which would make Snakemake skip everything downstream of it): a dry run
    after editing decode.max_new_tokens lists the decodes and evaluations that read it."""
    edited = tmp_path / "edited.yaml"
    edited.write_text("decode: {max_new_tokens: 20}\n")
    proc = snakemake("-n", "--configfile", "tests/fixtures/ci.yaml", str(edited), cwd=ci_dag)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    stats = out[out.index("Job stats"):]
    assert "evaluate" in stats and "decode" in stats and "resolve_config" not in stats, stats[:800]


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
