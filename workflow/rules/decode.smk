# Standalone decoding (method.md section 6): one run's final checkpoint x one decoding
# setting over the test prompts -> results/runs/{run}/decode/{setting}.jsonl (+ .summary.json).
# Settings: static-k{k} | confadapt-tau{tau} (k = decode.k_max) | verify-k{k}.

from mtpsd.settings import parse_setting


def decode_targets():
    """decode.settings of every run (JSONL + summary)."""
    out = []
    for run in RUNS:
        for s in RUN_CFG[run].decode.settings:
            out += [f"results/runs/{run}/decode/{s}.jsonl", f"results/runs/{run}/decode/{s}.summary.json"]
    return out


def decode_args(wildcards):
    """CLI arguments of one setting, as a list (quoted element by element with :q)."""
    cfg = RUN_CFG[wildcards.run]
    strategy, k, tau = parse_setting(wildcards.setting, k_max=cfg.decode.k_max)
    args = ["--strategy", strategy, "--k", str(k), "--tau", str(tau),
            "--max-new-tokens", str(cfg.decode.max_new_tokens), "--dtype", cfg.model.dtype]
    if cfg.decode.limit is not None:
        args += ["--limit", str(cfg.decode.limit)]
    if cfg.model.chat_template:
        args.append("--chat-template")
    return args


rule decode:
    """Decode the test prompts with one setting; generations, chunk sizes, pooled statistics."""
    input:
        ckpt="results/runs/{run}/checkpoint",
        cfg="results/runs/{run}/config.json",
        prompts="results/data/test.jsonl",
    output:
        rows="results/runs/{run}/decode/{setting}.jsonl",
        summary="results/runs/{run}/decode/{setting}.summary.json",
    wildcard_constraints:
        setting=r"static-k[0-9]+|verify-k[0-9]+|confadapt-tau[0-9.]+",
    params:
        args=decode_args,
    log:
        "results/runs/{run}/logs/decode/{setting}.log",
    benchmark:
        "results/runs/{run}/benchmarks/decode/{setting}.tsv"
    resources:
        gpu=1,
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd decode --checkpoint {input.ckpt:q} --prompts {input.prompts:q} {params.args:q}"
        " --out {output.rows:q} > {log:q} 2>&1"
