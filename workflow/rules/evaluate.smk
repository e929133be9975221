# lm-eval sweeps (method.md section 7): one job = one checkpoint x one task x one decoding
# setting -> results/runs/{run}/eval/{task}/{ckpt}/{setting}.json; then the summary CSVs.
# ckpt: "step0" (results/runs/{run}/mtp_init), "final" (.../checkpoint) or "step{N}"
# (.../checkpoints/step_{N:06d}, written by train_mtp but not a declared output, so the
# job depends on the final checkpoint). Helpers are prefixed eval_ (no lambdas).

from mtpsd.settings import format_setting

EVAL_CREATIVE = "mtpsd_creative_writing"
EVAL_SYNTH = "mtpsd_synth_math"


def eval_settings_final(cfg):
    """Decoding settings of the final checkpoint: static k, ConfAdapt tau, verify."""
    out = [format_setting("static", k=k) for k in cfg.decode.static_k]
    out += [format_setting("confadapt", tau=t) for t in cfg.decode.confadapt_tau]
    if cfg.decode.verify_k > 0:
        out.append(format_setting("verify", k=cfg.decode.verify_k))
    return out


def eval_run_targets(run):
    """Every evaluation JSON of one run: final sweep, step-0 at k=1, intermediate checkpoints."""
    cfg = RUN_CFG[run]
    base = "results/runs/" + run + "/eval/{task}/{ckpt}/{setting}.json"
    out = []
    for task in cfg.eval.tasks:
        out += [
            base.format(task=task, ckpt="final", setting=s)
            for s in eval_settings_final(cfg)
        ]
        out.append(base.format(task=task, ckpt="step0", setting="static-k1"))
        for step in cfg.eval.checkpoint_steps:
            for s in cfg.eval.checkpoint_settings:
                out.append(base.format(task=task, ckpt=f"step{step}", setting=s))
    return list(dict.fromkeys(out))


def eval_targets():
    """Evaluation JSONs of all runs (input of summarize)."""
    return [t for run in RUNS for t in eval_run_targets(run)]


def eval_train_metrics():
    return [f"results/runs/{run}/train_metrics.jsonl" for run in RUNS]


def eval_checkpoint_dir(wildcards):
    """The checkpoint directory the job reads."""
    run, ckpt = wildcards.run, wildcards.ckpt
    if ckpt == "step0":
        return f"results/runs/{run}/mtp_init"
    if ckpt == "final":
        return f"results/runs/{run}/checkpoint"
    return f"results/runs/{run}/checkpoints/step_{int(ckpt[4:]):06d}"


def eval_checkpoint_input(wildcards):
    """The declared output the job waits for (intermediate steps come with the final one)."""
    if wildcards.ckpt == "step0":
        return f"results/runs/{wildcards.run}/mtp_init"
    return f"results/runs/{wildcards.run}/checkpoint"


def eval_data_file(wildcards):
    """Local data of the task: eval.data_files[task]; the generated test split for synth math."""
    files = RUN_CFG[wildcards.run].eval.data_files
    if wildcards.task in files:
        return [files[wildcards.task]]
    if wildcards.task == EVAL_SYNTH:
        return ["results/data/test.jsonl"]
    return []


def eval_reference(wildcards):
    """Creative writing: the k=1 result of the same checkpoint (ROUGE-L against it)."""
    if wildcards.task != EVAL_CREATIVE or wildcards.setting == "static-k1":
        return []
    return [
        f"results/runs/{wildcards.run}/eval/{wildcards.task}/{wildcards.ckpt}/static-k1.json"
    ]


def eval_base_model(wildcards):
    """Creative writing: the frozen base model (perplexity of the stories)."""
    return [base_model_dir(wildcards)] if wildcards.task == EVAL_CREATIVE else []


def eval_extra_args(wildcards):
    """Optional CLI arguments, as a list (quoted element by element with :q)."""
    args = []
    for flag, values in (
        ("--data", eval_data_file(wildcards)),
        ("--reference", eval_reference(wildcards)),
        ("--base-model", eval_base_model(wildcards)),
    ):
        for v in values:
            args += [flag, v]
    return args


rule evaluate:
    """One checkpoint x one lm-eval task x one decoding setting."""
    input:
        cfg="results/runs/{run}/config.json",
        ckpt=eval_checkpoint_input,
        data=eval_data_file,
        reference=eval_reference,
        base=eval_base_model,
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
        ckpt_dir=eval_checkpoint_dir,
        extra=eval_extra_args,
    shell:
        "mtpsd evaluate --config {input.cfg:q} --checkpoint {params.ckpt_dir:q}"
        " --task {wildcards.task:q} --setting {wildcards.setting:q} {params.extra:q}"
        " --out {output:q} > {log:q} 2>&1"


rule summarize:
    """All evaluations and training metrics -> tidy CSVs (all that figures read)."""
    input:
        evals=eval_targets(),
        train=eval_train_metrics(),
    output:
        results="results/summary/results.csv",
        train="results/summary/train_metrics.csv",
    log:
        "results/summary/logs/summarize.log",
    benchmark:
        "results/summary/benchmarks/summarize.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd summarize --evals {input.evals:q} --train-metrics {input.train:q}"
        " --out-dir results/summary > {log:q} 2>&1"
