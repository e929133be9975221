# Standalone decoding (method.md section 6): one run's final checkpoint x one decoding
# setting over the test prompts -> results/runs/{run}/decode/{setting}.jsonl (+ .summary.json).
# This is the speed run: batch 1, in model.dtype, over a fixed subset of the test prompts
# (decode.speed_prompts, the same for every setting); accuracy comes from the evaluate rule.
# Settings: static-k{k} | confadapt-tau{tau} (k = decode.k_max) | verify-k{k}.


rule decode:
    """Decode the test prompts with one setting; generations, chunk sizes, pooled statistics."""
    input:
        ckpt="results/runs/{run}/checkpoint",
        cfg=ancient("results/runs/{run}/config.json"),
        prompts="results/data/test.jsonl",
        preflight=gpu_preflight,
    output:
        rows="results/runs/{run}/decode/{setting}.jsonl",
        summary="results/runs/{run}/decode/{setting}.summary.json",
    log:
        "results/runs/{run}/logs/decode/{setting}.log",
    benchmark:
        "results/runs/{run}/benchmarks/decode/{setting}.tsv"
    wildcard_constraints:
        setting=r"static-k[0-9]+|verify-k[0-9]+|confadapt-tau[0-9.]+",
    conda:
        "../envs/mtp.yaml"
    resources:
        gpu=1,
    params:
        args=decode_args,
        sections=stage_params("model"),
    shell:
        "mtpsd decode --checkpoint {input.ckpt:q} --prompts {input.prompts:q} {params.args:q}"
        " --out {output.rows:q} > {log:q} 2>&1"
