# Figures, tables and the paper report (method.md section 7b). Figures (one rule, `plot`,
# one job per figure) read only results/summary/*.csv and decode JSONL (never checkpoints),
# except the analysis rule confidence_quality, which scores validation prefixes with the
# student and its teacher. Outputs: figures/fig{NN}_{slug}.{png,pdf}, paper/generated/*,
# paper/report.md.


rule plot:
    """One figure (mtpsd.plotting.FIGURES, figure 11 for configs with ablation runs), drawn by
    `mtpsd plot` from the summary or decode file it reads (plot_input)."""
    input:
        plot_input,
    output:
        png="figures/{stem}.png",
        pdf="figures/{stem}.pdf",
    log:
        "results/figures/logs/plot_{stem}.log",
    benchmark:
        "results/figures/benchmarks/plot_{stem}.tsv"
    wildcard_constraints:
        stem=names_regex(PLOT_FIGURES),
    conda:
        "../envs/mtp.yaml"
    params:
        figure=plot_name,
        args=plot_in_args,
    shell:
        "mtpsd plot {params.figure:q} {params.args:q} --out {output.png:q} > {log:q} 2>&1"


rule confidence_quality:
    """Analysis for figure 6: student confidence vs teacher NLL of its k-token proposal."""
    input:
        student="results/runs/{run}/checkpoint",
        teacher=cq_teacher,
        cfg=ancient("results/runs/{run}/config.json"),
        data="results/data/validation.jsonl",
        preflight=gpu_preflight,
    output:
        "results/summary/confidence_quality_{run}.csv",
    log:
        "results/runs/{run}/logs/confidence_quality.log",
    benchmark:
        "results/runs/{run}/benchmarks/confidence_quality.tsv"
    conda:
        "../envs/mtp.yaml"
    resources:
        gpu=1,
    params:
        args=confidence_quality_args,
        sections=stage_params("seed", "model", "train"),
    shell:
        "mtpsd confidence-quality --student {input.student:q} --teacher {input.teacher:q}"
        " --config {input.cfg:q} --data {input.data:q} {params.args:q}"
        " --out {output:q} > {log:q} 2>&1"


rule make_tables:
    """Every strategy x task with standard errors, and paper vs ours (Markdown + LaTeX)."""
    input:
        "results/summary/results.csv",
    output:
        expand("paper/generated/{table}.{ext}", table=TABLES, ext=["md", "tex"]),
    log:
        "results/figures/logs/make_tables.log",
    benchmark:
        "results/figures/benchmarks/make_tables.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd report tables --results {input:q} --out-dir paper/generated > {log:q} 2>&1"


rule make_report:
    """paper/report.md: each paper claim checked against our CSVs; numbers.json / numbers.tex."""
    input:
        results="results/summary/results.csv",
        train="results/summary/train_metrics.csv",
        cq=expand("results/summary/confidence_quality_{run}.csv", run=RUNS),
        figures=expand("figures/{stem}.png", stem=FIGURE_STEMS.values()),
        ablations=ablation_figure_targets(),
        tables=expand("paper/generated/{table}.md", table=TABLES),
    output:
        report="paper/report.md",
        numbers="paper/generated/numbers.json",
        tex="paper/generated/numbers.tex",
    log:
        "results/figures/logs/make_report.log",
    benchmark:
        "results/figures/benchmarks/make_report.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd report build --summary-dir results/summary --figures-dir figures"
        " --generated-dir paper/generated --out {output.report:q} > {log:q} 2>&1"
