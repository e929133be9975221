"""profiles/slurm against a real SLURM: Debian's 22.05 on one node of this machine
(tests/slurm_cluster.py), the executor plugin pinned by the `cluster` extra.

The shrunk CI DAG (tests/fixtures/ci.yaml) runs through the project's profile, with its two
placeholders edited as its header asks: every job is a SLURM job (read back with sacct), SLURM
kills the training job at its time limit after its first checkpoint and the retry resumes from it,
every model and every result equals the local run's (the `ci_dag` fixture, bit for bit), and a
second invocation has nothing to do. The profile as shipped stops before any submission."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections import Counter

import pytest

from tests.slurm_cluster import LocalSlurm, unavailable
from tests.test_workflow import SNAKEMAKE, VENV_ENV, _scratch_copy, snakemake

PROFILE = "profiles/slurm"
CI = ("--configfile", "tests/fixtures/ci.yaml")
# the plugin's first status check comes 40 s after a submission (then every 40-180 s), which
# suits clusters; the jobs here take seconds
POLL = ("--slurm-init-seconds-before-status-checks", "2")


@pytest.fixture(scope="module")
def slurm():
    reason = unavailable()
    if reason:
        # CI installs SLURM (.ci/run): there the test must run, not skip
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(reason)
    with LocalSlurm() as cluster:
        yield cluster


@pytest.mark.workflow
def test_profile_placeholders_stop_the_run_before_any_submission(tmp_path):
    """As shipped, the profile names a partition and account no cluster has: the run stops
    while the Snakefile is read, naming the keys; a dry run only notes it."""
    _scratch_copy(tmp_path)
    proc = snakemake("--workflow-profile", PROFILE, *CI, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "default-resources: slurm_partition; default-resources: slurm_account" in out, out[-3000:]
    assert "edit profiles/slurm/config.yaml" in out
    # the plugin writes each job's log folder and this line for every sbatch
    assert "submitted with SLURM jobid" not in out and not (tmp_path / ".snakemake" / "slurm_logs").exists()
    assert not (tmp_path / "results").exists()
    dry = snakemake("-n", "--quiet", "rules", "--workflow-profile", PROFILE, *CI, cwd=tmp_path)
    assert dry.returncode == 0 and "note: the SLURM profile still holds its placeholders" in dry.stderr


def test_placeholders_are_found_in_default_and_per_rule_resources():
    """Snakemake keeps string resources as expressions (their text in `.raw`); a per-rule
    `set-resources` entry and a quoted value count too, an edited value does not."""
    from types import SimpleNamespace

    from snakemake.resources import Resource

    from mtpsd.workflow_env import placeholder_message, unset_placeholders

    def res(name, value):
        return Resource.from_cli_expression(name, value)

    settings = SimpleNamespace(
        default_resources={"slurm_partition": res("slurm_partition", "gpu"), "mem_mb": Resource("mem_mb", 1000),
                           "slurm_account": res("slurm_account", "'set-your-account'")},
        overwrite_resources={"decode": {"slurm_partition": res("slurm_partition", "set-your-partition")}})
    found = unset_placeholders(settings)
    assert found == ["default-resources: slurm_account", "set-resources: decode: slurm_partition"]
    assert "profiles/slurm/config.yaml" in placeholder_message(found)
    assert unset_placeholders(SimpleNamespace(default_resources=None, overwrite_resources={})) == []


def _edit_placeholders(root, slurm) -> None:
    """What the profile's header asks of a user: the cluster's partition and account."""
    path = root / PROFILE / "config.yaml"
    text = path.read_text()
    for placeholder, value in (("set-your-partition", slurm.partition), ("set-your-account", slurm.account)):
        assert text.count(f'"{placeholder}"') == 1, f"{path}: no single {placeholder} to edit"
        text = text.replace(f'"{placeholder}"', f'"{value}"')
    path.write_text(text)


def _kill_training_at_its_time_limit(root, slurm, run: subprocess.Popen) -> tuple[str, int]:
    """Once train_mtp's first checkpoint is on disk, freeze its job step (SIGSTOP sent by
    SLURM), check that training is still under way, and cut the job's time limit to one
    minute: SLURM ends it with TIMEOUT, as a cluster ends a training that outlives its
    `runtime`. (A job ended by `scancel` is never seen to end by plugin 2.8.0, which waits for
    ever: config/README.md.) Returns the job id and the step of the checkpoint."""
    ckpts = root / "results" / "runs" / "tiny" / "checkpoints"
    first = ckpts / "step_000004"
    while not first.is_dir():
        assert run.poll() is None, "snakemake ended before train_mtp wrote a checkpoint"
        time.sleep(0.05)
    queue = slurm.run(["squeue", "-h", "-o", "%i|%k"]).stdout.splitlines()
    job = next(line.split("|")[0] for line in queue if line.split("|")[1].startswith("rule_train_mtp"))
    slurm.run(["scancel", "--signal=STOP", job])
    later = sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step_") and p.name > first.name)
    assert not later and not (root / "results" / "runs" / "tiny" / "checkpoint").exists(), (
        f"training got past its first checkpoint before it was stopped ({later}): nothing to resume")
    slurm.run(["scontrol", "update", f"JobId={job}", "TimeLimit=1"])
    return job, 4


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _untimed(row: dict) -> dict:
    """A result row without its timings (wall_s, tokens_per_s, elapsed_s, ...)."""
    return {k: v for k, v in row.items() if not k.endswith("_s")}


def _jsonl(path) -> list[dict]:
    return [_untimed(json.loads(line)) for line in path.read_text().splitlines()]


def _assert_same_results(slurm_root, local_root) -> None:
    """Models bit for bit (the resumed training's final weights included), decodes, training
    metrics and the evaluation summary of `tiny`, timings aside."""
    import pandas as pd

    models = sorted(p.relative_to(local_root) for p in (local_root / "results").rglob("model.safetensors")
                    if "state" not in p.parts)
    assert len(models) >= 4, models  # base model, step 0, step-4 snapshot, final
    for rel in models:
        assert _sha256(slurm_root / rel) == _sha256(local_root / rel), f"{rel} differs from the local run"
    decodes = sorted((local_root / "results" / "runs" / "tiny" / "decode").glob("*.jsonl"))
    assert decodes
    for path in decodes:
        rel = path.relative_to(local_root)
        assert _jsonl(slurm_root / rel) == _jsonl(path), f"{rel} differs from the local run"
    metrics = "results/runs/tiny/train_metrics.jsonl"
    assert _jsonl(slurm_root / metrics) == _jsonl(local_root / metrics)

    def summary(root):
        frame = pd.read_csv(root / "results" / "summary" / "results.csv")
        frame = frame[frame["run"] == "tiny"].drop(columns=["tokens_per_s"])
        return frame.sort_values(["setting", "checkpoint", "metric"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(summary(slurm_root), summary(local_root))


def _job_stats(out: str) -> Counter:
    """The `Job stats` table snakemake prints before it starts: rule -> jobs."""
    lines = out[out.index("Job stats"):].splitlines()[3:]
    rows = [line.split() for line in lines[:lines.index("")]]
    return Counter({rule: int(n) for rule, n in rows if rule != "total"})


def _rule_of(comment: str, rules) -> str:
    """The rule of a SLURM job, from the plugin's --comment (`rule_<name>[_wildcards_...]`)."""
    return next(r for r in sorted(rules, key=len, reverse=True)
                if comment == f"rule_{r}" or comment.startswith(f"rule_{r}_wildcards_"))


@pytest.mark.slow
@pytest.mark.workflow
def test_ci_dag_runs_under_slurm_and_resumes_a_training_killed_at_its_time_limit(slurm, ci_dag_as_run, tmp_path):
    root = tmp_path
    _scratch_copy(root)
    _edit_placeholders(root, slurm)
    env = dict(VENV_ENV, SLURM_CONF=slurm.env["SLURM_CONF"])
    argv = [SNAKEMAKE, "--workflow-profile", PROFILE, *CI, *POLL]
    log = root / "snakemake.log"
    with open(log, "w") as out:
        run = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            killed, step = _kill_training_at_its_time_limit(root, slurm, run)
            run.wait(timeout=2400)
        finally:
            if run.poll() is None:
                run.terminate()
                run.wait(60)
    text = log.read_text()
    assert run.returncode == 0, text[-6000:] + slurm.logs()

    # every job of the DAG was a SLURM job (`all` only collects targets), and only the
    # killed training ran twice
    planned = _job_stats(text)
    jobs = slurm.sacct()
    print("\n".join(f"{j['JobID']:>3} {j['State']:<10} {j['Elapsed']} {j['Comment']}" for j in jobs))
    ran = Counter(_rule_of(j["Comment"], planned) for j in jobs if j["State"] == "COMPLETED")
    assert ran == planned - Counter({"all": 1}), (ran, planned)
    [stopped] = [j for j in jobs if j["State"] != "COMPLETED"]
    assert (stopped["JobID"], stopped["State"]) == (killed, "TIMEOUT"), stopped
    assert _rule_of(stopped["Comment"], planned) == "train_mtp"

    # the retry (the profile's `retries: 1`) resumed from the checkpoint the killed job wrote
    train_log = (root / "results" / "runs" / "tiny" / "logs" / "train_mtp.log").read_text()
    assert f"resuming from results/runs/tiny/checkpoints/step_{step:06d} (step {step})" in train_log, train_log[-2000:]
    assert "trained 8 steps" in train_log

    _assert_same_results(root, ci_dag_as_run)  # the local run as it ended (the ablation test adds to ci_dag)

    again = subprocess.run([*argv, "-n"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert "Nothing to be done" in again.stdout + again.stderr, (again.stdout + again.stderr)[-3000:]
    assert len(slurm.sacct()) == len(jobs)
