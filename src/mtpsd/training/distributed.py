"""The accelerator of a training run: one process, DDP, or FSDP2, on GPUs or on CPU processes.

``accelerate launch --config_file config/accelerate/fsdp.yaml`` starts ``num_processes``
processes with ``ACCELERATE_USE_FSDP=true`` and the ``FSDP_*`` settings of the file in their
environment. accelerate 1.15 turns FSDP on only for a GPU-like process group (its
``AcceleratorState`` checks MULTI_GPU, MULTI_XPU, ...): processes on CPU (``train-mtp --device
cpu``, gloo) come up as MULTI_CPU and would train with DDP, full replicas and full-size resume
states, under an FSDP config, without a word. :func:`make_accelerator` turns FSDP on there as
accelerate does on GPUs (the plugin from the same environment, its mixed-precision policy), so
the CPU run goes through accelerate's own FSDP2 code: ``fully_shard`` per decoder layer,
sharded ``save_state``/``load_state`` (torch.distributed.checkpoint), gathered state dicts.
That is how ``tests/test_fsdp.py`` runs the launch users run, on 2 CPU processes.

``accelerate launch --cpu`` is no CPU switch for this: accelerate then uses its simple launcher,
which starts one process (several only under mpirun) whatever ``--num_processes`` says, and
drops the FSDP settings. :func:`make_accelerator` warns when it sees that launch.

Gradient accumulation (:func:`micro_batch_context`): DDP skips the all-reduce on all but the
last micro-batch of a step (``no_sync``). FSDP reduce-scatters every micro-batch instead: its
``no_sync`` (``set_requires_gradient_sync(False)``) would keep a full unsharded gradient of the
model on every process between micro-batches (in the compute dtype: 15 GiB for an 8B model in
bf16; measured on 2 CPU processes, float32: 14 MiB more per process for an 8M-parameter model),
the memory FSDP is there to save; the reduce-scatters are the price (torchtitan's default too).

Checkpoints (:func:`full_state_dict`): the student's full state dict, gathered on every process
(a collective under FSDP), without the second name of a tied weight: gathered tensors no longer
share storage, so ``save_pretrained`` would write the tied output head again (Qwen3-4B in
float32: 1.5 GB more per checkpoint).
"""

from __future__ import annotations

import contextlib
import os
import warnings


def make_accelerator(*, mixed_precision: str, cpu: bool):
    """``accelerate.Accelerator`` for train-mtp, FSDP2 on CPU processes when the launch asks for FSDP."""
    from accelerate import Accelerator
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if cpu_flag_launched_one_process():
        warnings.warn("`accelerate launch --cpu` started this process alone (accelerate's --cpu uses its simple "
                      "launcher: one process, no FSDP, whatever --num_processes says). For several CPU processes "
                      "drop --cpu and pass --device cpu to train-mtp", stacklevel=2)
    # the schedule counts optimizer steps: accelerate's default would step a prepared scheduler
    # once per process at every optimizer step (P times too fast a warm-up on P processes)
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu, step_scheduler_with_optimizer=False)
    if (accelerator.distributed_type == DistributedType.MULTI_CPU
            and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"):
        plugin = FullyShardedDataParallelPlugin()  # reads the launch's FSDP_* settings
        if mixed_precision != "no":
            plugin.set_mixed_precision(mixed_precision)
        accelerator.state.fsdp_plugin = plugin
        accelerator.state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return accelerator


def cpu_flag_launched_one_process() -> bool:
    """Whether ``accelerate launch --cpu --num_processes N`` (N > 1) started this lone process:
    its simple launcher sets ACCELERATE_USE_CPU and a rendezvous address, but no world size."""
    return (os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in os.environ
            and "WORLD_SIZE" not in os.environ)


def micro_batch_context(accelerator, model, *, last: bool):
    """The context of one micro-batch's backward: gradients synchronised at the step's last
    micro-batch only (DDP), or at every one (FSDP, whose gradients stay sharded)."""
    from accelerate.utils import DistributedType

    if last or accelerator.distributed_type == DistributedType.FSDP:
        return contextlib.nullcontext()
    return accelerator.no_sync(model)


def full_state_dict(accelerator, model) -> dict:
    """The full state dict of the prepared ``model`` (collective under FSDP: call it on every
    process), each tied weight under its first name only, as a one-process save writes it."""
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    first = {name for name, _ in unwrapped.named_parameters()}
    every = {name for name, _ in unwrapped.named_parameters(remove_duplicate=False)}
    for name in every - first:
        state_dict.pop(name, None)
    return state_dict
