# GPUs: one GPU job per GPU. No rules here; included first by the Snakefile.
#
# The GPU rules (train_mtp with the processes of its accelerate config; decode, evaluate and
# confidence_quality with 1) declare `resources: gpu=N`. Snakemake limits a resource
# only when it has a limit, so this file gives `gpu` one at start: the GPUs present
# (CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`; no torch import, dry runs stay fast), unless
# `--resources gpu=N` (or a profile's `resources: gpu: N`) sets it. A one-GPU box then runs
# one GPU job at a time while CPU jobs (data, imports, figures) go on beside it. Without a
# GPU, or when jobs go to a cluster (`--jobs` with an executor), nothing is limited
# (mtpsd.workflow_env.gpu_limit). tests/fixtures/gpu_limit/ runs this file on its own.

from mtpsd.workflow_env import detect_gpus, gpu_limit


def _given_gpu_limit():
    """The `gpu` value of --resources / a profile's resources:, else None."""
    if "gpu" not in workflow.global_resources:
        return None
    return workflow.global_resources["gpu"].value


# jobs go to a cluster (--jobs with an executor): each asks the scheduler for its GPUs
ON_CLUSTER = workflow.global_resources["_nodes"].value is not None
GPUS, GPU_LIMIT = None, None  # set in the main process (jobs do not detect again)
if workflow.is_main_process:
    GPUS = detect_gpus()
    GPU_LIMIT = gpu_limit(
        given=_given_gpu_limit(),
        cluster=ON_CLUSTER,
        gpus=GPUS,
    )
    if GPU_LIMIT.limit is not None:
        workflow.register_resource("gpu", GPU_LIMIT.limit)


# Preflight hook: files every GPU job waits for (input `preflight=` of each GPU rule).
# workflow/rules/doctor.smk adds `mtpsd doctor`'s checklist when GPUs are here; every GPU job
# then waits for it, so it runs first. ancient(): a rerun of the preflight (a new config)
# never makes finished GPU jobs out of date.
GPU_PREFLIGHT = []


def gpu_preflight(wildcards):
    """Input function of the GPU rules: the preflight outputs (GPU_PREFLIGHT)."""
    return [ancient(f) for f in GPU_PREFLIGHT]
