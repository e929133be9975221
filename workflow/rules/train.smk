# Base model import, <MTP> token, self-distillation training (method.md sections 2-4).
# Multi-GPU: set train.accelerate_config (e.g. config/accelerate/fsdp.yaml) and the same
# `mtpsd train-mtp` command runs under `accelerate launch --config_file X -m mtpsd`.


rule import_base:
    """Load a pretrained base model (hub id, directory or GGUF) as a plain HF directory."""
    input:
        cfg=ancient("results/config.json"),
    output:
        directory("results/models/{model}"),
    log:
        "results/logs/import_base_{model}.log",
    benchmark:
        "results/benchmarks/import_base_{model}.tsv"
    wildcard_constraints:
        model=names_regex(PRETRAINED_MODELS),
    conda:
        "../envs/mtp.yaml"
    params:
        source=pretrained_source,
    shell:
        "mtpsd import-base --source {params.source:q} --out {output:q} > {log:q} 2>&1"


rule add_mtp_token:
    """Base model + <MTP> (reserved slot or new row, Gaussian init): the step-0 checkpoint."""
    input:
        cfg=ancient("results/runs/{run}/config.json"),
        base=base_model_dir,
    output:
        directory("results/runs/{run}/mtp_init"),
    log:
        "results/runs/{run}/logs/add_mtp_token.log",
    benchmark:
        "results/runs/{run}/benchmarks/add_mtp_token.tsv"
    priority: 1
    conda:
        "../envs/mtp.yaml"
    params:
        sections=stage_params("seed", "model"),
    shell:
        "mtpsd add-mtp-token --config {input.cfg:q} --base {input.base:q} --out {output:q} > {log:q} 2>&1"


rule train_mtp:
    """Online self-distillation; checkpoints every train.checkpoint_every steps (resumable)."""
    input:
        cfg=ancient("results/runs/{run}/config.json"),
        init="results/runs/{run}/mtp_init",
        data=train_data_file,
        preflight=gpu_preflight,
    output:
        ckpt=directory("results/runs/{run}/checkpoint"),
        metrics="results/runs/{run}/train_metrics.jsonl",
    log:
        "results/runs/{run}/logs/train_mtp.log",
    benchmark:
        "results/runs/{run}/benchmarks/train_mtp.tsv"
    wildcard_constraints:
        run=names_regex(TRAINED_RUNS),
    priority: 1
    conda:
        "../envs/mtp.yaml"
    # every core, or a share of them when several runs train (the seeds, ablations overlays)
    threads: training_threads(TRAINED_RUNS, most=64)
    resources:
        gpu=train_gpus,
    params:
        sections=train_config_params,
        checkpoints=train_checkpoint_dir,
        launcher=train_launcher,
    shell:
        # params.launcher is already shell-quoted (mtpsd.training.launch.train_command_shell)
        "{params.launcher} train-mtp --config {input.cfg:q} --init {input.init:q} --train {input.data:q}"
        " --checkpoint-dir {params.checkpoints:q}"
        " --out {output.ckpt:q} --metrics {output.metrics:q} > {log:q} 2>&1"


rule import_checkpoint:
    """An MTP checkpoint (`checkpoint:`) as the run's final checkpoint (reviewers: no training)."""
    input:
        cfg=ancient("results/runs/{run}/config.json"),
    output:
        directory("results/runs/{run}/checkpoint"),
    log:
        "results/runs/{run}/logs/import_checkpoint.log",
    benchmark:
        "results/runs/{run}/benchmarks/import_checkpoint.tsv"
    wildcard_constraints:
        run=names_regex(IMPORTED_RUNS),
    conda:
        "../envs/mtp.yaml"
    params:
        args=imported_checkpoint_args,
    shell:
        "mtpsd import-checkpoint {params.args:q} --out {output:q} > {log:q} 2>&1"
