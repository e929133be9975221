"""A stale Snakemake lock after a killed run: unlocked when nothing holds it, refused when something does.

Snakemake locks its working directory with files under ``.snakemake/locks/``
(``0.input.lock``, ``0.output.lock``: the paths the run reads and writes, no process id) and
removes them when it ends. A run killed with SIGKILL (an out-of-memory kill, a power loss)
cannot, and every later run stops with ``LockException`` until someone runs
``snakemake --unlock``. The workflow calls :func:`recover_stale_lock` while the Snakefile is
parsed (``workflow/rules/common.smk``), before Snakemake takes its lock, so ``make reproduce``
and every ``snakemake`` command of the README recover by themselves:

- no lock files: nothing to do;
- lock files, and something still works in this directory: a ``snakemake`` process or a job of
  the rules (an ``mtpsd`` process, which a killed Snakemake can leave running) whose working
  directory (``/proc/<pid>/cwd``) is this one, or the Snakemake that took the lock (below):
  a run is refused with a message naming each (pid and command line); a dry run, ``--unlock``
  and other invocations that take no lock go on after one line naming them;
- lock files taken on another host (shared file systems, cluster login nodes): refused, since
  that host's processes cannot be seen from here; ``snakemake --unlock`` once that run is over;
- otherwise the lock is stale: its files are removed, one line says so, and the run goes on.

Snakemake does not record who holds a lock, so the workflow's ``onstart`` handler (it runs
once Snakemake has locked, in real runs only) calls :func:`record_lock_holder`: host, boot id,
pid and start time of the Snakemake process in ``.snakemake/locks/mtpsd_holder.json``, inside
the lock folder so that Snakemake's own unlock (it deletes the folder) deletes it too. The
start time tells a live holder from a new process that got the same pid after a reboot.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from mtpsd.errors import MtpsdError
from mtpsd.io import atomic_write_text

LOCK_DIR = Path(".snakemake") / "locks"
HOLDER_FILE = "mtpsd_holder.json"
_LOCK_FILE = re.compile(r"^[0-9]+\.(input|output)\.lock$")
# snakemake invocations that take no lock (snakemake.cli's modes besides running the DAG);
# --delete-*-output is left out on purpose: it deletes what a live run may be writing
_NO_LOCK_MODES = ("dryrun", "nolock", "unlock", "lint", "list_target_rules", "list_rules", "print_compilation",
                  "dag", "rulegraph", "filegraph", "d3dag", "summary", "detailed_summary", "list_changes",
                  "list_input_changes", "list_params_changes", "list_untracked", "list_conda_envs",
                  "generate_unit_tests")


@dataclass(frozen=True)
class Holder:
    """A process that keeps the lock valid: ``pid`` and its command line (``host`` if remote)."""

    pid: int
    command: str
    host: str | None = None

    def describe(self) -> str:
        where = f" on host {self.host}" if self.host else ""
        return f"pid {self.pid}{where} ({self.command})"


def lock_files(workdir: str | Path = ".") -> list[Path]:
    """Snakemake's lock files in ``workdir`` (none when it is not locked)."""
    d = Path(workdir) / LOCK_DIR
    return sorted(p for p in d.glob("*.lock") if _LOCK_FILE.match(p.name)) if d.is_dir() else []


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])  # the fields after "(comm)" start at 3


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _ancestors(pid: int) -> set[int]:
    """``pid`` and its parents (make, a shell): never holders of the lock this process checks."""
    out = set()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
    return out


def is_workflow_process(argv: list[str]) -> bool:
    """Whether a command line runs snakemake or mtpsd (console script, ``python -m``, or
    ``accelerate launch ... -m mtpsd``)."""
    names = {"snakemake", "mtpsd"}
    if argv and Path(argv[0]).name in names:
        return True
    if len(argv) > 1 and Path(argv[0]).name.startswith("python") and Path(argv[1]).name in names:
        return True  # a console script: the interpreter runs the script file
    return any(a == "-m" and b in names for a, b in zip(argv, argv[1:]))


def working_processes(workdir: str | Path = ".") -> list[Holder]:
    """Live snakemake and mtpsd processes whose working directory is ``workdir`` (Linux /proc),
    other than this process and its parents. Zombies have no working directory and are skipped."""
    target = os.path.realpath(workdir)
    mine = _ancestors(os.getpid())
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone, a zombie, or another user's
            continue
        argv = _argv(int(entry.name))
        if os.path.realpath(cwd) == target and is_workflow_process(argv):
            found.append(Holder(int(entry.name), " ".join(argv)))
    return found


def record_lock_holder(workdir: str | Path = ".") -> Path:
    """Write who holds the lock (this process) into the lock folder; return the file."""
    pid = os.getpid()
    path = Path(workdir) / LOCK_DIR / HOLDER_FILE
    record = {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "start_ticks": _start_ticks(pid),
              "argv": sys.argv}
    atomic_write_text(path, json.dumps(record))
    return path


def recorded_holder(workdir: str | Path = ".") -> Holder | None:
    """The Snakemake that took the lock, if :func:`record_lock_holder` recorded it and it may
    still run: the same process on this host (pid alive with the recorded start time), or any
    record from another host (it cannot be checked from here)."""
    try:
        rec = json.loads((Path(workdir) / LOCK_DIR / HOLDER_FILE).read_text())
        pid, host = int(rec["pid"]), str(rec["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    command = " ".join(rec.get("argv") or ["snakemake"])
    if host != socket.gethostname():
        return Holder(pid, command, host=host)
    same_boot = rec.get("boot_id") is None or rec.get("boot_id") == _boot_id()
    if same_boot and rec.get("start_ticks") is not None and _start_ticks(pid) == rec["start_ticks"]:
        return Holder(pid, command)
    return None


def holders(workdir: str | Path = ".") -> list[Holder]:
    """Everything that keeps a lock in ``workdir`` valid (empty: the lock is stale)."""
    found = working_processes(workdir)
    rec = recorded_holder(workdir)
    if rec is not None and all(h.pid != rec.pid for h in found):
        found.insert(0, rec)
    return found


def takes_lock(argv: list[str]) -> bool:
    """Whether this snakemake command line would lock the directory (a run, not a dry run,
    ``--unlock``, a listing or a graph); read with Snakemake's own argument parser."""
    from snakemake.cli import get_argument_parser

    args, _ = get_argument_parser().parse_known_args(argv[1:])
    return not any(getattr(args, mode, None) for mode in _NO_LOCK_MODES)


def recover_stale_lock(workdir: str | Path = ".", argv: list[str] | None = None, *, log=None) -> bool:
    """Remove a stale Snakemake lock in ``workdir``; return whether one was removed.

    Raises :class:`MtpsdError` naming the holders when the lock is held and ``argv`` (default
    ``sys.argv``, the snakemake command line) would lock. ``log``: where the one-line notes go
    (default: stderr).
    """
    say = log or (lambda line: print(line, file=sys.stderr))
    files = lock_files(workdir)
    if not files:
        return False
    where = os.path.realpath(workdir)
    live = holders(workdir)
    if live:
        names = "; ".join(h.describe() for h in live)
        if takes_lock(sys.argv if argv is None else argv):
            remote = [h for h in live if h.host]
            hint = (f"if that run has ended, `snakemake --unlock` in {where} removes the lock"
                    if remote else f"wait for it to end or stop it (kill {' '.join(str(h.pid) for h in live)}), "
                    "then run the same command again")
            raise MtpsdError(f"{where} is locked by a run that is still going: {names}; {hint}")
        say(f"mtpsd: {where} is locked by a run that is still going: {names}")
        return False
    for f in files:
        f.unlink(missing_ok=True)
    (Path(workdir) / LOCK_DIR / HOLDER_FILE).unlink(missing_ok=True)
    say(f"mtpsd: removed the stale Snakemake lock of an interrupted run in {where} "
        "(no snakemake or mtpsd process works there); going on")
    return True
