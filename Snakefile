# mtpsd: multi-token prediction via self-distillation, end to end.
#
#   snakemake --cores all                                   # embedded default (tiny, CPU, offline)
#   snakemake --cores all --configfile config/smol.yaml     # SmolLM2-135M-Instruct on GSM8K
#   snakemake --workflow-profile profiles/gpu --configfile config/paper.yaml config/published.yaml
#   snakemake -n --quiet rules --configfile ...             # what would run, and the plan's hours
#   snakemake --rulegraph | dot -Tpng > rulegraph.png
#
# Run from the repository root (Snakemake finds this Snakefile there, and profiles/default
# as the workflow profile); config/ holds the experiments, profiles/ the runtime settings
# (default, gpu, slurm), workflow/ the rules, schemas, environments and report captions.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/gpus.smk"
include: "workflow/rules/doctor.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/config.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/decode.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        all_targets(),
