"""How the workflow launches ``mtpsd train-mtp``: a plain process or ``accelerate launch``.

``train.accelerate_config`` (a file under ``config/accelerate/``) selects the launcher::

    null                          ->  mtpsd train-mtp ...
    config/accelerate/fsdp.yaml   ->  accelerate launch --config_file config/accelerate/fsdp.yaml \\
                                          -m mtpsd train-mtp ...

The file says how many processes (GPUs) and which distributed mode (``single_gpu.yaml``:
one GPU; ``fsdp.yaml``: FSDP2 over ``num_processes`` GPUs of one node). The Snakemake
rule gets the prefix from :func:`train_command_prefix` (a list of argv words) or
:func:`train_command_shell` (one shell-quoted string), and the GPU count from
:func:`train_num_gpus` (its ``resources: gpu=``), and its CPU threads from
:func:`cpu_threads_per_job`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from mtpsd.errors import MtpsdError

DISTRIBUTED_TYPES = ("NO", "MULTI_GPU", "FSDP")


def _train(cfg):
    return cfg.train if hasattr(cfg, "train") else cfg


def read_accelerate_config(path: str | Path) -> dict:
    """The accelerate config file as a dict, with the keys mtpsd relies on checked."""
    path = Path(path)
    if not path.is_file():
        raise MtpsdError(f"train.accelerate_config: {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MtpsdError(f"train.accelerate_config: {path} is not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise MtpsdError(f"train.accelerate_config: {path} must be a mapping")
    dist = str(data.get("distributed_type", "NO"))
    if dist not in DISTRIBUTED_TYPES:
        raise MtpsdError(f"{path}: distributed_type={dist!r}; mtpsd supports {', '.join(DISTRIBUTED_TYPES)}")
    n = data.get("num_processes", 1)
    if not isinstance(n, int) or n < 1:
        raise MtpsdError(f"{path}: num_processes={n!r} must be an integer >= 1")
    return data


def train_num_gpus(cfg) -> int:
    """GPUs one training job uses: ``num_processes`` of the accelerate config, else 1."""
    path = _train(cfg).accelerate_config
    return 1 if path is None else int(read_accelerate_config(path)["num_processes"])


def train_command_prefix(cfg) -> list[str]:
    """argv words that precede ``train-mtp --config ...`` for this run's config.

    ``cfg``: the root config (or its ``train`` section). Checks the file exists and that
    ``train.global_batch_size`` splits over ``micro_batch_size x num_processes``.
    """
    tc = _train(cfg)
    if tc.accelerate_config is None:
        return ["mtpsd"]
    data = read_accelerate_config(tc.accelerate_config)
    per_step = tc.micro_batch_size * int(data["num_processes"])
    if tc.global_batch_size % per_step:
        raise MtpsdError(f"train.global_batch_size={tc.global_batch_size} must be a multiple of "
                         f"micro_batch_size x num_processes = {per_step} ({tc.accelerate_config})")
    return ["accelerate", "launch", "--config_file", str(tc.accelerate_config), "-m", "mtpsd"]


def train_command_shell(cfg) -> str:
    """:func:`train_command_prefix` as one shell-quoted string (for a rule's ``params:``)."""
    return shlex.join(train_command_prefix(cfg))


def cpu_threads_per_job(cores: int | None, side_by_side: int, most: int) -> int:
    """CPU threads for each of ``side_by_side`` training jobs that may run at once on ``cores``.

    The cores are shared out (at least one thread each, at most ``most``), so that several
    trainings (the seeds or ablations overlays) run side by side instead of one after the other:
    the tiny model scales poorly across threads, and two one-thread trainings on 2 cores do
    1.35 times the work of two-thread trainings one after the other (measured: pretraining
    437 s on one thread, 298 s on two; distillation 724-757 s and 495 s). The thread
    count does not change the weights under the pinned numerics (:mod:`mtpsd.numerics`).
    ``cores=None`` (a cluster run without ``--cores``): ``most``.
    """
    if side_by_side < 1 or most < 1:
        raise ValueError(f"side_by_side={side_by_side}, most={most}: both must be >= 1")
    if cores is None:
        return most
    return max(1, min(most, cores // side_by_side))
