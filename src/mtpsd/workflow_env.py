"""Helpers of the workflow's runtime: this package inside Snakemake's conda environments
(``snakemake --use-conda``), and the SLURM profile's placeholders.

``workflow/envs/mtp.yaml`` installs the checkout with the pip line ``-e ${MTPSD_SOURCE}``.
Snakemake copies the env file under ``--conda-prefix`` (default ``.snakemake/conda/`` of the
working directory) and conda runs pip from the directory of that copy, so a relative path
(``-e ../..``) resolves inside the conda prefix and breaks with ``--conda-prefix`` elsewhere
or ``--directory``. pip expands ``${VAR}`` in requirement lines; ``workflow/rules/common.smk``
calls :func:`export_source_dir` with the Snakefile's directory before any environment is
created, so the Snakemake process (and conda and pip under it) sees the checkout's path.

``workflow/profiles/slurm/config.yaml`` ships ``slurm_partition: set-your-partition`` and
``slurm_account: set-your-account``; submitted as they are, every sbatch would be rejected
(or the executor plugin would fail to validate the account). ``common.smk`` stops the run
before any submission with :func:`placeholder_message`, naming the keys to edit.
"""

from __future__ import annotations

import os
from pathlib import Path

SOURCE_VAR = "MTPSD_SOURCE"


def export_source_dir(workflow_dir: str | Path) -> str:
    """Set ``MTPSD_SOURCE`` to the absolute ``workflow_dir`` (the checkout); return it."""
    path = str(Path(workflow_dir).resolve())
    os.environ[SOURCE_VAR] = path
    return path


# ---- the SLURM profile's placeholders -------------------------------------------

PROFILE_PLACEHOLDERS = {"slurm_partition": "set-your-partition", "slurm_account": "set-your-account"}
SLURM_PROFILE = "workflow/profiles/slurm/config.yaml"


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
