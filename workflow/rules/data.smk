# Data preparation and the tiny from-scratch base model.
# results/config.json comes from rule resolve_config (config.smk).


rule prepare_data:
    """Build train/validation/test JSONL (synthetic, MetaMathQA or GSM8K) and stats."""
    input:
        cfg=ancient("results/config.json"),
    output:
        train="results/data/train.jsonl",
        validation="results/data/validation.jsonl",
        test="results/data/test.jsonl",
        stats="results/data/stats.json",
    log:
        "results/data/logs/prepare_data.log",
    benchmark:
        "results/data/benchmarks/prepare_data.tsv"
    conda:
        "../envs/mtp.yaml"
    params:
        sections=global_params("seed", "data"),
    shell:
        r"""
        mtpsd prepare-data \
            --config {input.cfg:q} \
            --train {output.train:q} \
            --validation {output.validation:q} \
            --test {output.test:q} \
            --stats {output.stats:q} \
            >{log:q} 2>&1
        """


rule prepare_run_data:
    """A run's own training data when its `data:` differs from the global one (the Magpie
    data ablation); built like prepare_data from the run's resolved config."""
    input:
        cfg=ancient("results/runs/{run}/config.json"),
    output:
        train="results/runs/{run}/data/train.jsonl",
        validation="results/runs/{run}/data/validation.jsonl",
        test="results/runs/{run}/data/test.jsonl",
        stats="results/runs/{run}/data/stats.json",
    log:
        "results/runs/{run}/logs/prepare_run_data.log",
    benchmark:
        "results/runs/{run}/benchmarks/prepare_run_data.tsv"
    wildcard_constraints:
        run=names_regex(OWN_DATA_RUNS),
    conda:
        "../envs/mtp.yaml"
    params:
        sections=stage_params("seed", "data"),
    shell:
        r"""
        mtpsd prepare-data \
            --config {input.cfg:q} \
            --train {output.train:q} \
            --validation {output.validation:q} \
            --test {output.test:q} \
            --stats {output.stats:q} \
            >{log:q} 2>&1
        """


rule pretrain_base:
    """Train the tiny tokenizer and Llama base model from scratch (model.source: scratch)."""
    input:
        cfg=ancient(model_run_config),
        train="results/data/train.jsonl",
        validation="results/data/validation.jsonl",
        test="results/data/test.jsonl",
    output:
        model=directory("results/models/{model}"),
    log:
        "results/logs/pretrain_base/{model}.log",
    benchmark:
        "results/benchmarks/pretrain_base/{model}.tsv"
    wildcard_constraints:
        model=names_regex(SCRATCH_MODELS),
    # trainings first: the evaluations fill the cores around them
    priority: 1
    conda:
        "../envs/mtp.yaml"
    # the tiny model gains little beyond 2 threads; several base models share the cores
    threads: training_threads(SCRATCH_MODELS, most=2)
    params:
        sections=model_config_params,
    shell:
        r"""
        mtpsd pretrain-base \
            --config {input.cfg:q} \
            --train {input.train:q} \
            --validation {input.validation:q} \
            --test {input.test:q} \
            --out {output.model:q} \
            --threads {threads} \
            >{log:q} 2>&1
        """
