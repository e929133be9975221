"""What the workflow needs from its host: this package inside Snakemake's conda environments,
the GPUs the GPU jobs share, and the SLURM profile's placeholders.

**Conda** (``snakemake --use-conda``).

``workflow/envs/mtp.yaml`` installs the checkout with the pip line ``-e ${MTPSD_SOURCE}``.
Snakemake copies the env file under ``--conda-prefix`` (default ``.snakemake/conda/`` of the
working directory) and conda runs pip from the directory of that copy, so a relative path
(``-e ../..``) resolves inside the conda prefix and breaks with ``--conda-prefix`` elsewhere
or ``--directory``. pip expands ``${VAR}`` in requirement lines; ``workflow/rules/common.smk``
calls :func:`export_source_dir` with the Snakefile's directory (its checkout is used) before any environment is
created, so the Snakemake process (and conda and pip under it) sees the checkout's path.

**SLURM profile.** ``profiles/slurm/config.yaml`` ships ``slurm_partition: set-your-partition`` and
``slurm_account: set-your-account``; submitted as they are, every sbatch would be rejected
(or the executor plugin would fail to validate the account). ``common.smk`` stops the run
before any submission with :func:`placeholder_message`, naming the keys to edit.

**GPUs** (``workflow/rules/gpus.smk``). Every rule that runs on a GPU declares
``resources: gpu=N``; Snakemake only limits a resource that has a limit, so the workflow sets
``gpu`` to the GPUs present (:func:`detect_gpus`, :func:`gpu_limit`) unless ``--resources
gpu=N`` gives one: a one-GPU box runs one GPU job at a time while CPU jobs go on beside it.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

SOURCE_VAR = "MTPSD_SOURCE"


def checkout_dir(workflow_dir: str | Path) -> Path:
    """The checkout a workflow directory belongs to: the first of ``workflow_dir`` and its
    parents holding ``pyproject.toml``, else itself."""
    path = Path(workflow_dir).resolve()
    return next((d for d in (path, *path.parents) if (d / "pyproject.toml").is_file()), path)


def export_source_dir(workflow_dir: str | Path) -> str:
    """Set ``MTPSD_SOURCE`` to the absolute checkout of ``workflow_dir``; return it."""
    path = str(checkout_dir(workflow_dir))
    os.environ[SOURCE_VAR] = path
    return path


# ---- the SLURM profile's placeholders -------------------------------------------

PROFILE_PLACEHOLDERS = {"slurm_partition": "set-your-partition", "slurm_account": "set-your-account"}
SLURM_PROFILE = "profiles/slurm/config.yaml"


def _raw(resource) -> object:
    """A resource's value as written (Snakemake keeps string resources as expressions to
    evaluate per job, with the text in ``.raw``), without quotes."""
    raw = getattr(resource, "raw", resource)
    return raw.strip("'\"") if isinstance(raw, str) else raw


def unset_placeholders(resource_settings) -> list[str]:
    """Profile entries that still hold a placeholder of the SLURM profile, as
    ``default-resources: slurm_partition`` or ``set-resources: train_mtp: slurm_account``.

    ``resource_settings``: ``workflow.resource_settings`` (its ``default_resources`` and
    ``overwrite_resources``, which are the profile's ``default-resources`` and ``set-resources``).
    """
    found = []
    defaults = resource_settings.default_resources or {}
    for name, value in PROFILE_PLACEHOLDERS.items():
        if name in defaults and _raw(defaults[name]) == value:
            found.append(f"default-resources: {name}")
    for rule, resources in (resource_settings.overwrite_resources or {}).items():
        for name, value in PROFILE_PLACEHOLDERS.items():
            if name in resources and _raw(resources[name]) == value:
                found.append(f"set-resources: {rule}: {name}")
    return found


def placeholder_message(found: list[str]) -> str:
    """What to edit, for :func:`unset_placeholders`' list (non-empty)."""
    return (f"the SLURM profile still holds its placeholders ({'; '.join(found)}): edit "
            f"{SLURM_PROFILE} (or your copy of it) before submitting: slurm_partition = a partition of "
            "your cluster (`sinfo -s` lists them; GPU rules need one with GPUs), slurm_account = "
            "your account (`sacctmgr -n -s list user $USER format=account` lists yours; delete the "
            "line if your cluster has no accounts)")


# ---- GPUs: how many GPU jobs may run at once ------------------------------------------

# `nvidia-smi -L` prints one line per GPU: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)"
_SMI_LINE = re.compile(r"^GPU (\d+): (.+?)(?: \(UUID: [^)]*\))?\s*$")


@dataclass(frozen=True)
class GpuInfo:
    """The GPUs this process can use: how many, their names, and how that was found."""

    count: int
    names: tuple[str, ...]  # what nvidia-smi -L lists (all GPUs of the host)
    source: str  # "CUDA_VISIBLE_DEVICES=0,1", "nvidia-smi -L" or why none was found


def _visible_entries(value: str) -> int:
    """Devices CUDA exposes for a CUDA_VISIBLE_DEVICES value: the entries before the first
    empty or negative one (CUDA stops there; "" and "-1" hide every GPU)."""
    n = 0
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        n += 1
    return n


def detect_gpus(environ: dict | None = None, *, nvidia_smi: str = "nvidia-smi", timeout: float = 20.0) -> GpuInfo:
    """The GPUs visible here, without importing torch (a Snakemake dry run stays fast).

    The count is ``CUDA_VISIBLE_DEVICES``'s when set (what CUDA itself honours: a scheduler's
    allocation or a user's choice), else the number of GPUs ``nvidia-smi -L`` lists; 0 where
    neither says anything (no driver, no nvidia-smi). Names come from ``nvidia-smi -L``.
    """
    environ = os.environ if environ is None else environ
    names: list[str] = []
    smi_source = f"{nvidia_smi} -L"
    try:
        proc = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        smi_source = f"no GPU found (no {nvidia_smi})"
    except (OSError, subprocess.SubprocessError) as e:
        smi_source = f"no GPU found ({nvidia_smi}: {type(e).__name__})"
    else:
        if proc.returncode == 0:
            names = [m.group(2) for m in map(_SMI_LINE.match, proc.stdout.splitlines()) if m]
        else:
            smi_source = f"no GPU found ({nvidia_smi} -L exited {proc.returncode})"
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        n = _visible_entries(visible)
        return GpuInfo(n, tuple(names), f"CUDA_VISIBLE_DEVICES={visible}")
    return GpuInfo(len(names), tuple(names), smi_source)


@dataclass(frozen=True)
class GpuLimit:
    """How many GPUs the workflow's GPU jobs may hold at once (``resources: gpu``)."""

    limit: int | None  # None: no limit (no GPU here, or jobs go to a cluster)
    reason: str

    def line(self) -> str:
        if self.limit is None:
            return f"GPU jobs: no limit ({self.reason})"
        return f"GPU jobs: at most {self.limit} GPU(s) at once ({self.reason})"


def gpu_limit(*, given: int | None, cluster: bool, gpus: GpuInfo) -> GpuLimit:
    """The ``gpu`` resource limit of one Snakemake invocation.

    ``given``: the ``gpu`` value of ``--resources`` (or a profile's ``resources:``), which wins;
    ``cluster``: jobs are submitted to a cluster (``--jobs`` with a cluster executor), where
    each job asks the scheduler for its own GPUs and the submitting host's GPUs do not matter.
    Otherwise the limit is the number of GPUs detected here; with none, GPU rules run on the
    CPU and nothing is limited (the embedded default runs its evaluations side by side).
    """
    if given is not None:
        return GpuLimit(int(given), "--resources gpu=N")
    if cluster:
        return GpuLimit(None, "cluster jobs: each asks the scheduler for its GPUs")
    if gpus.count > 0:
        return GpuLimit(gpus.count, f"{gpus.count} detected by {gpus.source}; --resources gpu=N overrides")
    return GpuLimit(None, f"{gpus.source}; GPU rules run on the CPU")
