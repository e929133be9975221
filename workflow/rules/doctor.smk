import json

# Preflight: `mtpsd doctor` before the first GPU job on this machine. Included after gpus.smk
# when GPUs are here and jobs run on them (not on a cluster: each node is then its own
# machine); its checklist is then an input of every GPU rule (GPU_PREFLIGHT), so a missing
# token, a full disk or a model that does not fit stops the DAG before any GPU hour, with the
# first thing to fix on the terminal. Without GPUs (the embedded default, CI) it is not in the DAG.

DOCTOR = "results/doctor.txt"
if workflow.is_main_process and GPUS is not None and GPUS.count > 0 and not ON_CLUSTER:
    GPU_PREFLIGHT.append(DOCTOR)


rule doctor:
    """Preflight checklist (mtpsd.doctor): GPUs and free memory against the training and
    evaluation memory plans, disk, hub, gated-dataset token, nltk data, lm-eval tasks.
    """
    output:
        DOCTOR,
    log:
        "results/logs/doctor.log",
    conda:
        "../envs/mtp.yaml"
    params:
        config=lambda wildcards: json.dumps(config, sort_keys=True),  # a new config checks again
    shell:
        'mtpsd doctor --json "$MTPSD_CONFIG_JSON" --results results --out {output:q} > {log:q} 2>&1'
        " || {{ cat {log:q} >&2; exit 1; }}"
