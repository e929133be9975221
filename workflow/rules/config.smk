# Resolved configs: the exact input of every later step (validated before any work).
# These rules only create missing files. An existing file whose values no longer match the
# config (an overlay, an edited value) is rewritten before the DAG is built
# (mtpsd.config.resolved explains why they have no params); later rules re-run on their own
# section params. $MTPSD_CONFIG_JSON: the merged config (exported by common.smk).


rule resolve_config:
    """Global resolved config (no run overrides)."""
    output:
        "results/config.json",
    log:
        "results/logs/resolve_config.log",
    conda:
        "../envs/mtp.yaml"
    shell:
        'mtpsd resolve-config --json "$MTPSD_CONFIG_JSON" --out {output:q} > {log:q} 2>&1'


rule resolve_run_config:
    """One run's resolved config (its `runs:` overrides applied)."""
    output:
        "results/runs/{run}/config.json",
    log:
        "results/runs/{run}/logs/resolve_run_config.log",
    conda:
        "../envs/mtp.yaml"
    shell:
        'mtpsd resolve-config --json "$MTPSD_CONFIG_JSON" --run {wildcards.run:q} --out {output:q} > {log:q} 2>&1'
