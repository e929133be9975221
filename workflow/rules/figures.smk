# Figures, tables and the paper report (method.md section 7b). Figures read only
# results/summary/*.csv and decode JSONL (never checkpoints), except the analysis rule
# confidence_quality, which scores validation prefixes with the student and its teacher.
# Outputs: figures/fig{NN}_{slug}.{png,pdf}, paper/generated/*, paper/report.md.
# The PNGs, the Markdown tables and paper/report.md carry report() flags for Snakemake's HTML
# report (`make report`); their one-sentence captions are workflow/report/*.rst.


rule plot_chunks:
    """Figure 1: one generated answer coloured by decoding chunk."""
    input:
        chunks_decode_file,
    output:
        png=report(
            "figures/fig01_chunks.png",
            caption="../report/fig01_chunks.rst",
            category="Figures",
            subcategory="Decoding",
        ),
        pdf="figures/fig01_chunks.pdf",
    log:
        "results/figures/logs/plot_chunks.log",
    benchmark:
        "results/figures/benchmarks/plot_chunks.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd plot chunks --in {input:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_layout:
    """Figure 2: training layout of one hand-made text (mtpsd.layout)."""
    output:
        png=report(
            "figures/fig02_layout.png",
            caption="../report/fig02_layout.rst",
            category="Figures",
            subcategory="Training",
        ),
        pdf="figures/fig02_layout.pdf",
    log:
        "results/figures/logs/plot_layout.log",
    benchmark:
        "results/figures/benchmarks/plot_layout.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd plot layout --out {output.png:q} > {log:q} 2>&1"


rule plot_mask_offsets:
    """Figure 3: blocked attention mask for two sets of prediction positions."""
    output:
        png=report(
            "figures/fig03_mask_offsets.png",
            caption="../report/fig03_mask_offsets.rst",
            category="Figures",
            subcategory="Training",
        ),
        pdf="figures/fig03_mask_offsets.pdf",
    log:
        "results/figures/logs/plot_mask_offsets.log",
    benchmark:
        "results/figures/benchmarks/plot_mask_offsets.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd plot mask-offsets --out {output.png:q} > {log:q} 2>&1"


rule plot_mask_k:
    """Figure 4: blocked attention mask for two values of k."""
    output:
        png=report(
            "figures/fig04_mask_k.png",
            caption="../report/fig04_mask_k.rst",
            category="Figures",
            subcategory="Training",
        ),
        pdf="figures/fig04_mask_k.pdf",
    log:
        "results/figures/logs/plot_mask_k.log",
    benchmark:
        "results/figures/benchmarks/plot_mask_k.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd plot mask-k --out {output.png:q} > {log:q} 2>&1"


rule plot_pareto:
    """Figure 5: accuracy vs effective k (ours and the paper's GSM8K points)."""
    input:
        "results/summary/results.csv",
    output:
        png=report(
            "figures/fig05_pareto.png",
            caption="../report/fig05_pareto.rst",
            category="Figures",
            subcategory="Decoding",
        ),
        pdf="figures/fig05_pareto.pdf",
    log:
        "results/figures/logs/plot_pareto.log",
    benchmark:
        "results/figures/benchmarks/plot_pareto.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd plot pareto --in {input:q} --out {output.png:q} > {log:q} 2>&1"


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


rule plot_confidence_quality:
    """Figure 6: confidence vs quality scatter with correlations (first run)."""
    input:
        f"results/summary/confidence_quality_{RUNS[0]}.csv",
    output:
        png=report(
            "figures/fig06_confidence_quality.png",
            caption="../report/fig06_confidence_quality.rst",
            category="Figures",
            subcategory="Decoding",
        ),
        pdf="figures/fig06_confidence_quality.pdf",
    log:
        "results/figures/logs/plot_confidence_quality.log",
    benchmark:
        "results/figures/benchmarks/plot_confidence_quality.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd plot confidence-quality --in {input:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_accuracy_steps:
    """Figure 7: accuracy over training steps per decoding setting."""
    input:
        "results/summary/results.csv",
    output:
        png=report(
            "figures/fig07_accuracy_steps.png",
            caption="../report/fig07_accuracy_steps.rst",
            category="Figures",
            subcategory="Training",
        ),
        pdf="figures/fig07_accuracy_steps.pdf",
    log:
        "results/figures/logs/plot_accuracy_steps.log",
    benchmark:
        "results/figures/benchmarks/plot_accuracy_steps.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd plot accuracy-steps --in {input:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_acceleration_steps:
    """Figure 8: effective k over training steps per decoding setting."""
    input:
        "results/summary/results.csv",
    output:
        png=report(
            "figures/fig08_acceleration_steps.png",
            caption="../report/fig08_acceleration_steps.rst",
            category="Figures",
            subcategory="Training",
        ),
        pdf="figures/fig08_acceleration_steps.pdf",
    log:
        "results/figures/logs/plot_acceleration_steps.log",
    benchmark:
        "results/figures/benchmarks/plot_acceleration_steps.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd plot acceleration-steps --in {input:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_wallclock:
    """Figure 9: wall-clock speedup vs effective k, from the batch-1 speed runs."""
    input:
        "results/summary/speed.csv",
    output:
        png=report(
            "figures/fig09_wallclock.png",
            caption="../report/fig09_wallclock.rst",
            category="Figures",
            subcategory="Decoding",
        ),
        pdf="figures/fig09_wallclock.pdf",
    log:
        "results/figures/logs/plot_wallclock.log",
    benchmark:
        "results/figures/benchmarks/plot_wallclock.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd plot wallclock --in {input:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_training:
    """Figure 10: training loss and per-position teacher agreement."""
    input:
        "results/summary/train_metrics.csv",
    output:
        png=report(
            "figures/fig10_training.png",
            caption="../report/fig10_training.rst",
            category="Figures",
            subcategory="Training",
        ),
        pdf="figures/fig10_training.pdf",
    log:
        "results/figures/logs/plot_training.log",
    benchmark:
        "results/figures/benchmarks/plot_training.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd plot training --in {input:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_ablations:
    """Figure 11 (configs with ablation runs): accuracy vs effective k, one curve per ablation,
    beside the paper's ablation rows."""
    input:
        "results/summary/results.csv",
    output:
        png=report(
            f"figures/{ABLATION_FIGURE[0]}.png",
            caption="../report/fig11_ablations.rst",
            category="Figures",
            subcategory="Training",
        ),
        pdf=f"figures/{ABLATION_FIGURE[0]}.pdf",
    log:
        "results/figures/logs/plot_ablations.log",
    benchmark:
        "results/figures/benchmarks/plot_ablations.tsv"
    conda:
        "../envs/mtp.yaml"
    shell:
        "mtpsd plot ablations --in {input:q} --out {output.png:q} > {log:q} 2>&1"


rule make_tables:
    """Every strategy x task with standard errors, and paper vs ours (Markdown + LaTeX)."""
    input:
        "results/summary/results.csv",
    output:
        strategies=report(
            "paper/generated/table01_strategies.md",
            caption="../report/table01_strategies.rst",
            category="Tables",
            subcategory="Decoding",
        ),
        paper_vs_ours=report(
            "paper/generated/table02_paper_vs_ours.md",
            caption="../report/table02_paper_vs_ours.rst",
            category="Tables",
            subcategory="Decoding",
        ),
        tex=expand("paper/generated/{table}.tex", table=TABLES),
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
        report=report(
            "paper/report.md",
            caption="../report/paper_report.rst",
            category="Tables",
            subcategory="Claims",
        ),
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
