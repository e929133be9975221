"""Stale Snakemake locks (mtpsd.workflow_lock): removed when nothing holds the directory,
refused naming the holder when something does. Holders here are real processes (``exec -a``
gives them the command name of a snakemake or an mtpsd job) working in a scratch directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from mtpsd import workflow_lock as wl
from mtpsd.errors import MtpsdError

RUN = ["/venv/bin/snakemake", "--cores", "all"]


def _locked(tmp_path):
    d = tmp_path / ".snakemake" / "locks"
    d.mkdir(parents=True)
    (d / "0.input.lock").write_text("results/data/train.jsonl\n")
    (d / "0.output.lock").write_text("results/runs/tiny/checkpoint\n")
    return tmp_path


@pytest.fixture
def process_named(tmp_path):
    """Start a process whose command line is ``name ...`` in ``cwd``; all are killed after the test."""
    procs = []

    def start(name, cwd):
        p = subprocess.Popen(["bash", "-c", f"exec -a {name} sleep 60"], cwd=cwd)
        deadline = time.monotonic() + 10
        while wl._argv(p.pid)[:1] != [name]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_a_stale_lock_is_removed_in_one_line(tmp_path):
    work = _locked(tmp_path)
    lines = []
    assert wl.recover_stale_lock(work, RUN, log=lines.append)
    assert wl.lock_files(work) == []
    assert len(lines) == 1 and "removed the stale Snakemake lock" in lines[0] and str(work) in lines[0]
    assert not wl.recover_stale_lock(work, RUN, log=lines.append) and len(lines) == 1  # nothing left to do


@pytest.mark.parametrize("name", ["snakemake", "mtpsd"])
def test_a_live_process_in_the_directory_keeps_the_lock(tmp_path, process_named, name):
    """A snakemake, or a job it left running when it was killed (`mtpsd train-mtp`)."""
    work = _locked(tmp_path)
    holder = process_named(name, work)
    elsewhere = process_named(name, tmp_path.parent)  # another directory's run is no holder
    with pytest.raises(MtpsdError) as e:
        wl.recover_stale_lock(work, RUN)
    msg = str(e.value)
    assert f"pid {holder.pid} ({name} 60)" in msg and f"kill {holder.pid}" in msg and str(elsewhere.pid) not in msg
    assert len(wl.lock_files(work)) == 2
    lines = []  # a dry run goes on (Snakemake only warns), naming the holder, and leaves the lock
    assert not wl.recover_stale_lock(work, [*RUN, "-n"], log=lines.append)
    assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and len(wl.lock_files(work)) == 2
    holder.kill()
    holder.wait()
    assert wl.recover_stale_lock(work, RUN, log=lines.append)  # gone: the lock is stale


def test_a_killed_unreaped_process_holds_nothing(tmp_path, process_named):
    """SIGKILL leaves a zombie until its parent reaps it: it no longer works anywhere."""
    work = _locked(tmp_path)
    p = process_named("snakemake", work)
    p.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "Z" not in open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert wl.working_processes(work) == []
    assert wl.recover_stale_lock(work, RUN, log=lambda line: None)


def test_the_recorded_holder(tmp_path):
    """onstart's record: this process while it lives; the same pid with another start time (a
    new process after a reboot) is none; a record from another host is refused, not guessed."""
    work = _locked(tmp_path)
    path = wl.record_lock_holder(work)
    assert wl.recorded_holder(work) == wl.Holder(os.getpid(), " ".join(json.loads(path.read_text())["argv"]))
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "start_ticks": rec["start_ticks"] + 1}))
    assert wl.recorded_holder(work) is None
    path.write_text(json.dumps({**rec, "host": socket.gethostname() + "-login2"}))
    with pytest.raises(MtpsdError, match=r"on host \S+-login2 .*`snakemake --unlock`"):
        wl.recover_stale_lock(work, RUN)
    path.write_text(json.dumps({**rec, "pid": 2**22 + 7}))  # no such process: stale
    assert wl.recover_stale_lock(work, RUN, log=lambda line: None)
    assert not path.exists()


def test_which_invocations_take_the_lock():
    assert wl.takes_lock(RUN) and wl.takes_lock(["snakemake", "--workflow-profile", "profiles/paper"])
    for extra in (["-n"], ["-np"], ["--dry-run"], ["--unlock"], ["--rulegraph"], ["--summary"], ["--lint"]):
        assert not wl.takes_lock([*RUN, *extra]), extra
    assert wl.takes_lock([*RUN, "--delete-all-output"])  # deletes what a live run writes


def test_command_lines_of_the_workflow():
    assert wl.is_workflow_process(["/w/.venv/bin/python", "/w/.venv/bin/snakemake", "--cores", "2"])
    assert wl.is_workflow_process(["python", "-m", "snakemake"])
    assert wl.is_workflow_process(["/w/.venv/bin/python", "/w/.venv/bin/mtpsd", "train-mtp"])
    assert wl.is_workflow_process(["python", "/w/.venv/bin/accelerate", "launch", "--config_file", "f.yaml",
                                   "-m", "mtpsd", "train-mtp"])
    assert not wl.is_workflow_process(["bash", "-c", "mtpsd train-mtp --config x > log"])  # its child is
    assert not wl.is_workflow_process(["vim", "snakemake"]) and not wl.is_workflow_process(["less", "mtpsd"])
