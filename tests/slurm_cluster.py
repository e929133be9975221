"""A single-node SLURM on localhost for the tests (tests/test_slurm.py): Debian's SLURM 22.05
with job accounting, everything under one temporary directory that :meth:`LocalSlurm.stop`
deletes.

Daemons, each a child process of the caller (killed with it): munged (own key and socket),
mariadbd (empty data directory, no grant tables, localhost only), slurmdbd (accounting, so
that ``sacct`` lists every job and the executor plugin polls job states as on a real
cluster), slurmctld and slurmd. Ports are free ones picked at start. The packages come from
``.ci/install-slurm`` (run as root); the daemons run as root.

The node declares more than this machine has (``SlurmdParameters=config_overrides``): 32
CPUs, 400 GB and 4 GPUs (GRES backed by empty files; jobs see no GPU and run on the CPU),
so that the project's SLURM profile is scheduled with its own requests (``--gpus=4
--cpus-per-gpu=8 --mem 400000`` for ``train_mtp``). Nothing enforces CPU or memory
limits (no cgroups here), so the jobs share the real cores.

    python -m tests.slurm_cluster   # start one, print how to use it, stop on Ctrl-C
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "mariadb-server-core")
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct", "sacctmgr")
CLUSTER, PARTITION, ACCOUNT = "mtpsd", "local", "mtpsd-ci"
# where SLURM's commands look for slurm.conf without SLURM_CONF: the usual file, then the
# directory a configless slurmd links to its copy
ETC_CONF, RUN_CONF = Path("/etc/slurm/slurm.conf"), Path("/run/slurm/conf")


def unavailable() -> str | None:
    """Why a local SLURM cannot start here (None: it can)."""
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"SLURM is not installed (no {', '.join(missing)}): run .ci/install-slurm as root"
    if os.geteuid() != 0:
        return "the local SLURM's daemons run as root (slurmd starts jobs as their user)"
    if RUN_CONF.is_symlink() and not RUN_CONF.exists() and "mtpsd-slurm-" in str(RUN_CONF.readlink()):
        RUN_CONF.unlink()  # left by a LocalSlurm whose process was killed
    for path in (ETC_CONF, RUN_CONF):
        if path.exists() or path.is_symlink():
            return f"{path} exists: another SLURM is configured on this machine, and jobs would find its config"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """preexec_fn: the daemon gets SIGTERM when the process that started it dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalSlurm:
    """``with LocalSlurm() as slurm: subprocess.run([...], env=slurm.env)``."""

    def __init__(self, root: str | Path | None = None):
        # short paths: the munge socket's must stay under the 108-byte limit of AF_UNIX
        self.root = Path(root or tempfile.mkdtemp(prefix="mtpsd-slurm-"))
        self.host = socket.gethostname().split(".")[0]
        self.partition, self.account = PARTITION, ACCOUNT
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self.env = dict(os.environ, SLURM_CONF=str(self.root / "etc" / "slurm.conf"))

    # ---- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> LocalSlurm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> None:
        r = self.root
        r.chmod(0o755)  # munged: every directory above its socket must be searchable by all
        for d in ("etc", "state", "spool", "log", "db", "dev", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o755)
        key = r / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        for i in range(4):
            (r / "dev" / f"gpu{i}").touch()
        ports = {name: _free_port() for name in ("db", "dbd", "ctld", "d")}
        self._write_configs(ports)
        # srun inside a job finds slurm.conf here: the jobstep executor plugin drops SLURM_CONF
        # from its environment (a configless slurmd links the same path to its copy)
        RUN_CONF.parent.mkdir(parents=True, exist_ok=True)
        RUN_CONF.symlink_to(r / "etc")
        sock = r / "munge" / "munge.socket"
        self._spawn("munged", ["munged", "-F", f"--key-file={key}", f"--socket={sock}",
                               f"--pid-file={r}/munge/munged.pid", f"--seed-file={r}/munge/munged.seed"])
        self._wait("munged", lambda: subprocess.run(["munge", "-n", "-S", str(sock)],
                                                    capture_output=True).returncode == 0)
        self._spawn("mariadbd", ["mariadbd", "--no-defaults", "--user=root", f"--datadir={r}/db",
                                 f"--socket={r}/db/mysqld.sock", f"--port={ports['db']}",
                                 "--bind-address=127.0.0.1", "--skip-grant-tables", "--skip-log-bin",
                                 f"--pid-file={r}/db/mysqld.pid", "--innodb-buffer-pool-size=32M"])
        self._wait("mariadbd", lambda: self._listening(ports["db"]))
        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        self._wait("slurmdbd", lambda: self._listening(ports["dbd"]))
        for what in (["cluster", CLUSTER], ["account", ACCOUNT], ["user", "root", f"account={ACCOUNT}"]):
            self.run(["sacctmgr", "-i", "add", *what])
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._spawn("slurmd", ["slurmd", "-D"])
        self._wait("slurmd", lambda: self.run(["sinfo", "-h", "-o", "%T"], check=False).stdout.strip() == "idle")

    def stop(self) -> None:
        """Stop the daemons (newest first) and delete the directory."""
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        if RUN_CONF.is_symlink() and RUN_CONF.readlink() == self.root / "etc":
            RUN_CONF.unlink()
            with contextlib.suppress(OSError):
                RUN_CONF.parent.rmdir()
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- queries ------------------------------------------------------------------

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        if check and proc.returncode:
            raise RuntimeError(f"{' '.join(argv)}: {proc.stderr}{self.logs()}")
        return proc

    def sacct(self, fields=("JobID", "JobName", "Comment", "State", "ExitCode", "Elapsed")) -> list[dict]:
        """Every job of the cluster (one row per job, no steps), as ``sacct`` prints them."""
        out = self.run(["sacct", "-X", "-a", "--parsable2", "--format", ",".join(fields)]).stdout
        return list(csv.DictReader(io.StringIO(out), delimiter="|"))

    def logs(self, tail: int = 20) -> str:
        """The end of every daemon log, for failure messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"\n--- {path.name}\n" + "\n".join(lines))
        return "".join(parts)

    # ---- internals ----------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.log", "ab")
        self._procs.append((name, subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)))
        log.close()

    def _wait(self, name: str, ready, timeout: float = 60) -> None:
        proc = dict(self._procs).get(name)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ready():
                return
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}{self.logs()}")
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout:.0f} s{self.logs()}")

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _write_configs(self, ports: dict) -> None:
        r, sock = self.root, self.root / "munge" / "munge.socket"
        common = f"AuthType=auth/munge\nAuthInfo=socket={sock}\n"
        (r / "etc" / "slurm.conf").write_text(
            f"ClusterName={CLUSTER}\nSlurmctldHost={self.host}(127.0.0.1)\n{common}"
            f"CredType=cred/munge\nSlurmUser=root\nSlurmdUser=root\n"
            f"SlurmctldPort={ports['ctld']}\nSlurmdPort={ports['d']}\n"
            f"StateSaveLocation={r}/state\nSlurmdSpoolDir={r}/spool\n"
            f"SlurmctldPidFile={r}/state/slurmctld.pid\nSlurmdPidFile={r}/spool/slurmd.pid\n"
            # no cgroups in containers: track processes by /proc, no CPU binding
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nMpiDefault=none\n"
            "SchedulerType=sched/backfill\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\n"
            "JobAcctGatherType=jobacct_gather/linux\n"
            f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\n"
            f"AccountingStoragePort={ports['dbd']}\nAccountingStoragePass={sock}\n"
            "AccountingStoreFlags=job_comment\n"  # the plugin's --comment names the rule
            "ReturnToService=2\nSlurmdParameters=config_overrides\nGresTypes=gpu\n"

            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs=32 RealMemory=400000 Gres=gpu:4 State=UNKNOWN\n"
            f"PartitionName={PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP\n")
        (r / "etc" / "gres.conf").write_text(f"NodeName={self.host} Name=gpu File={r}/dev/gpu[0-3]\n")
        dbd = r / "etc" / "slurmdbd.conf"
        dbd.write_text(
            f"{common}DbdHost=localhost\nDbdPort={ports['dbd']}\nSlurmUser=root\n"
            f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={ports['db']}\n"
            f"StorageUser=root\nStorageLoc=slurm_acct_db\n"
            f"PidFile={r}/state/slurmdbd.pid\n")
        dbd.chmod(0o600)  # slurmdbd refuses a config others can read


if __name__ == "__main__":
    reason = unavailable()
    if reason:
        raise SystemExit(reason)
    with LocalSlurm() as slurm:
        print(f"export SLURM_CONF={slurm.env['SLURM_CONF']}  # partition {slurm.partition}, "
              f"account {slurm.account}; Ctrl-C stops it")
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on kill too
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
