# Resolved configs: the exact input of every later step (validated before any work).


rule resolve_config:
    """Global resolved config (no run overrides)."""
    output:
        "results/config.json",
    log:
        "results/logs/resolve_config.log",
    conda:
        "../envs/mtp.yaml"
    params:
        cfg=config_json(),
    shell:
        "mtpsd resolve-config --json {params.cfg:q} --out {output:q} > {log:q} 2>&1"


rule resolve_run_config:
    """One run's resolved config (its `runs:` overrides applied)."""
    output:
        "results/runs/{run}/config.json",
    log:
        "results/runs/{run}/logs/resolve_run_config.log",
    conda:
        "../envs/mtp.yaml"
    params:
        cfg=config_json(),
    shell:
        "mtpsd resolve-config --json {params.cfg:q} --run {wildcards.run:q} --out {output:q} > {log:q} 2>&1"
