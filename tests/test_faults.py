"""Faults a long run meets, injected for real into the shrunk default DAG (tests/fixtures/ci.yaml),
each followed by the README's command run again (``snakemake --cores ...``, what ``make
reproduce`` runs): a kill -9 of Snakemake and the training job, a damaged newest checkpoint,
a kill -9 mid-evaluation, a full file system while a checkpoint is written (a real tmpfs), a
damaged result file. Each works on a copy of the uninterrupted run (``ci_dag_as_run``), asks
only for the targets the fault needs, and compares with that run: what the rerun redid, and
that the weights and the summary are those of the uninterrupted run. The seconds each rerun
took are printed (``pytest -s``) as ``recovered: ...``.

After every kill, everything a reader would take for complete is complete (JSON parses, every
JSONL line parses, every checkpoint matches its manifest): partial writes exist only as
hidden temporaries, which no step reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mtpsd import workflow_lock
from mtpsd.training import resume
from tests.conftest import REPO
from tests.test_workflow import SNAKEMAKE, VENV_ENV, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.workflow]

CI = ("--configfile", "tests/fixtures/ci.yaml")  # after the targets: --configfile takes every word after it
RUN = "results/runs/tiny"
TRAINED = f"{RUN}/checkpoint"
EVAL = f"{RUN}/eval/mtpsd_synth_math"
SUMMARY = "results/summary/results.csv"
UNLOCKED = "removed the stale Snakemake lock of an interrupted run"


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)  # mtimes kept: Snakemake sees an up-to-date run
    return dest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _start(work: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    log = work / "interrupted.log"
    with log.open("w") as out:  # the child keeps its own copy
        proc = subprocess.Popen([SNAKEMAKE, *args], cwd=work, env=VENV_ENV, stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def _wait_for(cond, proc, log, what, timeout=900):
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the run ended before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.01)


def _jobs(work: Path, verb: str) -> list[workflow_lock.Holder]:
    return [h for h in workflow_lock.working_processes(work) if f"mtpsd {verb}" in h.command]


def _kill(work: Path, proc: subprocess.Popen, *jobs: workflow_lock.Holder) -> None:
    """SIGKILL Snakemake and its running jobs, as an OOM kill or a power loss would; wait until
    nothing of the run works in ``work`` any more (their shells end with them)."""
    for pid in (proc.pid, *(j.pid for j in jobs)):
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while workflow_lock.working_processes(work):
        assert time.monotonic() < deadline, workflow_lock.working_processes(work)
        time.sleep(0.05)


def _rerun(work: Path, target: str, *overlays: str, label: str):
    """The README's command again (for ``target``, with the CI config and ``overlays``);
    returns the process and the seconds it took, which it prints."""
    t0 = time.monotonic()
    proc = snakemake(target, "--cores", "2", *CI, *overlays, cwd=work, timeout=1500)
    took = time.monotonic() - t0
    print(f"\nrecovered: {label}: {took:.1f} s")
    return proc, took


def _job_count(out: str, rule: str) -> int:
    """Jobs of ``rule`` in Snakemake's "Job stats" table (0 if absent)."""
    stats = out[out.index("Job stats"):].splitlines() if "Job stats" in out else []
    counts = [line.split() for line in stats]
    return next((int(c[1]) for c in counts if len(c) == 2 and c[0] == rule and c[1].isdigit()), 0)


def assert_nothing_partial(work: Path) -> None:
    """Every result a step could read is whole: partial writes are only hidden temporaries."""
    for path in (work / "results").rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(work).parts) or not path.is_file():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
    for ck in (work / RUN / "checkpoints").glob("step_*"):
        assert resume.manifest_problem(ck) is None, ck


def test_killed_mid_training_resumes_from_its_checkpoint_to_the_same_weights(ci_dag_as_run, tmp_path):
    """kill -9 of Snakemake and `mtpsd train-mtp` after the step-4 checkpoint (checkpoints every
    2 steps here, a config overlay that changes no weight): the rerun unlocks, resumes from
    step 4 and ends with the uninterrupted run's weights. A copy of the killed run with its
    newest checkpoint damaged (truncated weights of the step-4 resume state) resumes from step 2 instead,
    warning with the file's name, and ends with the same weights."""
    work = _copy(ci_dag_as_run, tmp_path / "killed")
    overlay = work / "every2.yaml"
    overlay.write_text("train: {checkpoint_every: 2}\n")
    for p in (TRAINED, f"{RUN}/checkpoints", f"{RUN}/train_metrics.jsonl", f"{RUN}/logs/train_mtp.log"):
        shutil.rmtree(work / p) if (work / p).is_dir() else (work / p).unlink()
    proc, log = _start(work, TRAINED, "--cores", "2", *CI, str(overlay))
    ck = work / RUN / "checkpoints"
    _wait_for(lambda: (ck / "step_000004").is_dir(), proc, log, "step-4 checkpoint")
    trainer = _jobs(work, "train-mtp")
    assert len(trainer) == 1, "the training job is not running"
    _kill(work, proc, *trainer)

    assert workflow_lock.lock_files(work), "a killed Snakemake leaves its lock"
    assert not (work / TRAINED).exists()
    logged = [json.loads(line)["step"] for line in (work / RUN / "train_metrics.jsonl").read_text().splitlines()]
    assert_nothing_partial(work)
    assert [p.name for p in resume.step_dirs(ck)] == ["step_000002", "step_000004"]
    damaged = _copy(work, tmp_path / "damaged")
    print(f"\nkilled at training step > 4 (last logged step {logged[-1]} of 8)")

    rerun, took = _rerun(work, TRAINED, str(overlay), label="kill -9 mid-training (resume from step 4)")
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-6000:]
    assert UNLOCKED in out and not workflow_lock.lock_files(work)
    train_log = (work / RUN / "logs" / "train_mtp.log").read_text()
    assert f"resuming from {RUN}/checkpoints/step_000004 (step 4)" in train_log
    assert _job_count(out, "train_mtp") == 1 and _job_count(out, "total") == 1  # nothing else redone
    expected = _sha256(ci_dag_as_run / TRAINED / "model.safetensors")
    assert _sha256(work / TRAINED / "model.safetensors") == expected

    victim = damaged / RUN / "checkpoints" / "step_000004" / "state" / "model.safetensors"
    os.truncate(victim, victim.stat().st_size // 3)
    rerun, took = _rerun(damaged, TRAINED, str(overlay), label="damaged newest checkpoint (resume from step 2)")
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-6000:]
    train_log = (damaged / RUN / "logs" / "train_mtp.log").read_text()
    assert f"skipping a damaged checkpoint: {RUN}/checkpoints/step_000004/state/model.safetensors is damaged" in train_log
    assert f"resuming from {RUN}/checkpoints/step_000002 (step 2)" in train_log
    assert _sha256(damaged / TRAINED / "model.safetensors") == expected


def _incomplete(work: Path) -> set[str]:
    """Outputs Snakemake marked as started but not finished (.snakemake/incomplete/, base64 names)."""
    import base64

    found = set()
    for f in (work / ".snakemake" / "incomplete").rglob("*"):
        if f.is_file() and not f.name.startswith("@") and f.name != "migration_underway":
            parts = f.relative_to(work / ".snakemake" / "incomplete").parts
            found.add(base64.urlsafe_b64decode("".join(p.lstrip("@") for p in parts)).decode())
    return found


def test_killed_mid_evaluation_redoes_only_the_killed_evaluation(ci_dag_as_run, tmp_path):
    """Two evaluations to redo, one at a time: kill -9 of Snakemake and the second evaluation
    while it runs. The lock is kept while a snakemake still works in the directory (the rerun
    is refused naming it); once it is gone, the rerun unlocks, runs only the killed evaluation
    (the finished one is kept as it is) and the summary, which equals the uninterrupted one."""
    work = _copy(ci_dag_as_run, tmp_path / "killed")
    targets = [f"{EVAL}/final/static-k1.json", f"{EVAL}/final/static-k3.json"]
    for t in targets:
        (work / t).unlink()
        (work / t.replace("/eval/", "/logs/evaluate/").replace(".json", ".log")).unlink()
    shutil.rmtree(work / "results" / "summary")  # (with the summary there, Snakemake would not redo its inputs)
    proc, log = _start(work, SUMMARY, "--cores", "1", *CI)

    def second_running():  # the first has written its result, the other one's job runs
        waiting = [t for t in targets if not (work / t).exists()]
        return len(waiting) == 1 and any(f"--out {waiting[0]}" in j.command for j in _jobs(work, "evaluate"))

    _wait_for(second_running, proc, log, "the second evaluation")
    _kill(work, proc, *_jobs(work, "evaluate"))
    done = [t for t in targets if (work / t).exists()]
    killed = [t for t in targets if t not in done]
    assert len(done) == 1 and _incomplete(work) >= set(killed) and not set(done) & _incomplete(work)
    holder_record = json.loads((work / workflow_lock.LOCK_DIR / workflow_lock.HOLDER_FILE).read_text())
    assert holder_record["pid"] == proc.pid  # onstart recorded who took the lock
    assert_nothing_partial(work)
    kept = (work / done[0]).stat()

    holder = subprocess.Popen(["bash", "-c", "exec -a snakemake sleep 120"], cwd=work)
    try:
        _wait_for(lambda: workflow_lock.working_processes(work), holder, log, "the stand-in snakemake", 30)
        refused = snakemake(SUMMARY, "--cores", "2", *CI, cwd=work)
        out = refused.stdout + refused.stderr
        assert refused.returncode != 0 and f"is locked by a run that is still going: pid {holder.pid}" in out, out[-3000:]
        assert f"kill {holder.pid}" in out and "Job stats" not in out
    finally:
        holder.kill()
        holder.wait()

    rerun, took = _rerun(work, SUMMARY, label="kill -9 mid-evaluation (1 of 2 evaluations redone)")
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-6000:]
    assert UNLOCKED in out
    assert _job_count(out, "evaluate") == 1 and _job_count(out, "summarize") == 1 and _job_count(out, "total") == 2
    assert f"output: {killed[0]}" in out and f"output: {done[0]}" not in out
    assert (work / done[0]).stat().st_ino == kept.st_ino  # the finished one was not redone
    _same_summary(work, ci_dag_as_run)


def _same_summary(work: Path, reference: Path) -> None:
    """results.csv equal to the uninterrupted run's, but the measured speeds (wall clock)."""
    a, b = (pd.read_csv(d / SUMMARY).drop(columns=["tokens_per_s"]) for d in (work, reference))
    pd.testing.assert_frame_equal(a, b)


def test_damaged_result_names_its_file_and_rule_and_is_rewritten(ci_dag_as_run, tmp_path):
    """A truncated evaluation JSON (damaged after it was written: the writes are atomic): the
    summary step stops with one line naming the file and the rule that writes it, no traceback;
    doing what it says (delete, rerun) redoes that one evaluation and the summary."""
    work = _copy(ci_dag_as_run, tmp_path / "damaged")
    victim = work / EVAL / "final" / "static-k1.json"
    text = victim.read_text()
    victim.write_text(text[: len(text) // 2])
    failed = snakemake(SUMMARY, "--cores", "2", *CI, cwd=work)
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0
    line = next(line for line in out.splitlines() if line.startswith("mtpsd summarize: error:"))
    assert f"{EVAL}/final/static-k1.json: not valid JSON" in line and "rule `evaluate` writes it" in line
    assert f"`rm {EVAL}/final/static-k1.json`" in line
    assert "Traceback" not in (work / "results" / "summary" / "logs" / "summarize.log").read_text()

    victim.unlink()
    rerun, took = _rerun(work, SUMMARY, label="damaged result JSON (1 evaluation redone)")
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-6000:]
    assert _job_count(out, "evaluate") == 1 and _job_count(out, "total") == 2
    _same_summary(work, ci_dag_as_run)


# ---- a full file system --------------------------------------------------------------

def _can_mount_tmpfs() -> bool:
    """A private mount namespace (root, or a user namespace) with a tmpfs of our own."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


def full_disk_run(work: str, size: str) -> None:
    """Inside a private mount namespace: the checkpoint folder on a tmpfs of ``size`` bytes,
    train (the step-8 checkpoint does not fit), check what is left, make room, train again.
    Writes what it saw to ``full_disk.json`` in ``work``."""
    work_p = Path(work)
    ck = work_p / RUN / "checkpoints"
    ck.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(ck)], check=True)
    report = {}
    first = snakemake(TRAINED, "--cores", "2", *CI, cwd=work_p, timeout=1500)
    report["first_rc"], report["first_log"] = first.returncode, (work_p / RUN / "logs" / "train_mtp.log").read_text()
    report["left"] = sorted(p.name for p in ck.iterdir())
    report["free_after"] = shutil.disk_usage(ck).free
    report["problems"] = {p.name: resume.manifest_problem(p) for p in resume.step_dirs(ck)}
    loaded = subprocess.run([sys.executable, "-c", "import sys, torch; from transformers import "
                             "AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained(sys.argv[1]); "
                             "torch.load(sys.argv[1] + '/trainer_state.pt', weights_only=False)",
                             str(ck / "step_000004")], capture_output=True, text=True, env=VENV_ENV)
    report["step4_loads"] = loaded.returncode == 0
    subprocess.run(["mount", "-o", "remount,size=256m", str(ck)], check=True)  # space freed
    t0 = time.monotonic()
    second = snakemake(TRAINED, "--cores", "2", *CI, cwd=work_p, timeout=1500)
    report["recover_s"] = time.monotonic() - t0
    report["second_rc"], report["second_out"] = second.returncode, (second.stdout + second.stderr)[-6000:]
    report["second_log"] = (work_p / RUN / "logs" / "train_mtp.log").read_text()
    (work_p / "full_disk.json").write_text(json.dumps(report))


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no private mount namespace (unshare) to mount a small tmpfs")
def test_a_full_disk_while_a_checkpoint_is_written_stops_cleanly_and_the_rerun_resumes(ci_dag_as_run, tmp_path):
    """The checkpoint folder on a real tmpfs with room for the step-4 checkpoint and half of the
    step-8 one: training stops at step 8 with one line naming the checkpoint, the partial one is
    removed, step 4 loads; after the file system is enlarged, the same command resumes from
    step 4 and ends with the uninterrupted run's weights."""
    work = _copy(ci_dag_as_run, tmp_path / "full")
    reference = ci_dag_as_run / RUN / "checkpoints"
    step4 = sum(f.stat().st_size for f in (reference / "step_000004").rglob("*") if f.is_file())
    step8 = sum(f.stat().st_size for f in (reference / "step_000008").rglob("*") if f.is_file())
    for p in (TRAINED, f"{RUN}/checkpoints", f"{RUN}/train_metrics.jsonl"):
        shutil.rmtree(work / p) if (work / p).is_dir() else (work / p).unlink()
    size = step4 + step8 // 2
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c",
                    f"from tests.test_faults import full_disk_run; full_disk_run({str(work)!r}, '{size}')"],
                   cwd=REPO, env=VENV_ENV, check=True, timeout=3000)
    report = json.loads((work / "full_disk.json").read_text())
    print(f"\nrecovered: full disk mid-checkpoint (resume from step 4): {report['recover_s']:.1f} s")
    errors = [line for line in report["first_log"].splitlines() if line.startswith("mtpsd train-mtp: error:")]
    assert report["first_rc"] != 0 and len(errors) == 1, report["first_log"][-3000:]
    assert f"no space left on the device while writing checkpoint {RUN}/checkpoints/step_000008" in errors[0]
    assert f"the previous checkpoint {RUN}/checkpoints/step_000004 is intact" in errors[0]
    assert "Traceback" not in report["first_log"]
    assert report["left"] == ["step_000004"] and report["problems"] == {"step_000004": None}
    assert report["step4_loads"]
    assert report["second_rc"] == 0, report["second_out"]
    assert f"resuming from {RUN}/checkpoints/step_000004 (step 4)" in report["second_log"]
    expected = _sha256(ci_dag_as_run / TRAINED / "model.safetensors")
    assert _sha256(work / TRAINED / "model.safetensors") == expected
