# mtpsd: multi-token prediction via self-distillation, end to end.
#
#   snakemake --cores all                                   # embedded default (tiny, CPU, offline)
#   snakemake --cores all --configfile config/smol.yaml     # SmolLM2-135M-Instruct on GSM8K
#   snakemake --workflow-profile workflow/profiles/paper    # the paper's models (GPU)
#   snakemake --rulegraph | dot -Tpng > rulegraph.png

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


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
