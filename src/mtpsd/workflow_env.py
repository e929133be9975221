"""This package inside Snakemake's conda environments (``snakemake --use-conda``).

``workflow/envs/mtp.yaml`` installs the checkout with the pip line ``-e ${MTPSD_SOURCE}``.
Snakemake copies the env file under ``--conda-prefix`` (default ``.snakemake/conda/`` of the
working directory) and conda runs pip from the directory of that copy, so a relative path
(``-e ../..``) resolves inside the conda prefix and breaks with ``--conda-prefix`` elsewhere
or ``--directory``. pip expands ``${VAR}`` in requirement lines; ``workflow/rules/common.smk``
calls :func:`export_source_dir` with the Snakefile's directory before any environment is
created, so the Snakemake process (and conda and pip under it) sees the checkout's path.
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
