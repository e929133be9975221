# lm-eval sweeps (method.md section 7): one job = one checkpoint x one task x one decoding
# setting -> results/runs/{run}/eval/{task}/{ckpt}/{setting}.json; then the summary CSVs.
# ckpt: "step0" (results/runs/{run}/mtp_init), "final" (.../checkpoint) or "step{N}"
# (.../checkpoints/step_{N:06d}, written by train_mtp but not a declared output, so the
# job depends on the final checkpoint). Helpers are prefixed eval_ (no lambdas).


rule evaluate:
    """One checkpoint x one lm-eval task x one decoding setting."""
    input:
        cfg=ancient("results/runs/{run}/config.json"),
        ckpt=eval_checkpoint_input,
        data=eval_data_file,
        reference=eval_reference,
        base=eval_base_model,
        preflight=gpu_preflight,
    output:
        "results/runs/{run}/eval/{task}/{ckpt}/{setting}.json",
    log:
        "results/runs/{run}/logs/evaluate/{task}/{ckpt}/{setting}.log",
    benchmark:
        "results/runs/{run}/benchmarks/evaluate/{task}/{ckpt}/{setting}.tsv"
    wildcard_constraints:
        ckpt=r"step0|final|step[0-9]+",
        setting=r"static-k[0-9]+|verify-k[0-9]+|confadapt-tau[0-9.]+",
    conda:
        "../envs/mtp.yaml"
    resources:
        gpu=1,
    params:
        sections=stage_params("model", "decode", "eval"),
        ckpt_dir=eval_checkpoint_dir,
        extra=eval_extra_args,
    shell:
        "mtpsd evaluate --config {input.cfg:q} --checkpoint {params.ckpt_dir:q}"
        " --ckpt {wildcards.ckpt:q} --task {wildcards.task:q} --setting {wildcards.setting:q} {params.extra:q}"
        " --out {output:q} > {log:q} 2>&1"


rule summarize:
    """All evaluations, training metrics and batch-1 speed runs -> tidy CSVs (all that
    figures read)."""
    input:
        evals=eval_targets(),
        train=eval_train_metrics(),
        decodes=decode_summaries(),
    output:
        results="results/summary/results.csv",
        train="results/summary/train_metrics.csv",
        speed="results/summary/speed.csv",
    log:
        "results/summary/logs/summarize.log",
    benchmark:
        "results/summary/benchmarks/summarize.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd summarize --evals {input.evals:q} --train-metrics {input.train:q}"
        " --decodes {input.decodes:q} --out-dir results/summary > {log:q} 2>&1"
