# Base model import, <MTP> token, self-distillation training (method.md sections 2-4).
# Multi-GPU: run the same `mtpsd train-mtp` command under
# `accelerate launch --config_file config/accelerate/fsdp.yaml -m mtpsd ...`.


def pretrained_source(wildcards):
    """model.pretrained of the runs whose base model is `wildcards.model`."""
    sources = {c.model.pretrained for c in RUN_CFG.values() if c.model.name == wildcards.model}
    if len(sources) != 1:
        raise WorkflowError(f"model '{wildcards.model}': runs disagree on model.pretrained ({sources})")
    return sources.pop()


def train_config_params(wildcards):
    """Config sections train_mtp reads (editing them re-runs training)."""
    return section_params(wildcards.run, "seed", "model", "train")


def train_checkpoint_dir(wildcards):
    """Intermediate checkpoints: not an output, so they survive a failed job (resume)."""
    return f"results/runs/{wildcards.run}/checkpoints"


rule import_base:
    """Load a pretrained base model (hub id, directory or GGUF) as a plain HF directory."""
    input:
        cfg="results/config.json",
    output:
        directory("results/models/{model}"),
    wildcard_constraints:
        model=names_regex(PRETRAINED_MODELS),
    params:
        source=pretrained_source,
    log:
        "results/logs/import_base_{model}.log",
    benchmark:
        "results/benchmarks/import_base_{model}.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd import-base --source {params.source:q} --out {output:q} > {log:q} 2>&1"


rule add_mtp_token:
    """Base model + <MTP> (reserved slot or new row, Gaussian init): the step-0 checkpoint."""
    input:
        cfg="results/runs/{run}/config.json",
        base=base_model_dir,
    output:
        directory("results/runs/{run}/mtp_init"),
    log:
        "results/runs/{run}/logs/add_mtp_token.log",
    benchmark:
        "results/runs/{run}/benchmarks/add_mtp_token.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd add-mtp-token --config {input.cfg:q} --base {input.base:q} --out {output:q} > {log:q} 2>&1"


rule train_mtp:
    """Online self-distillation; checkpoints every train.checkpoint_every steps (resumable)."""
    input:
        cfg="results/runs/{run}/config.json",
        init="results/runs/{run}/mtp_init",
        data="results/data/train.jsonl",
    output:
        ckpt=directory("results/runs/{run}/checkpoint"),
        metrics="results/runs/{run}/train_metrics.jsonl",
    params:
        sections=train_config_params,
        checkpoints=train_checkpoint_dir,
    log:
        "results/runs/{run}/logs/train_mtp.log",
    benchmark:
        "results/runs/{run}/benchmarks/train_mtp.tsv"
    resources:
        gpu=1,
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd train-mtp --config {input.cfg:q} --init {input.init:q} --train {input.data:q}"
        " --checkpoint-dir {params.checkpoints:q}"
        " --out {output.ckpt:q} --metrics {output.metrics:q} > {log:q} 2>&1"
