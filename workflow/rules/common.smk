# Helpers shared by all rules: config validation, per-run configs, routing.
# No rules here. Paths in validate() are relative to this file.

import json
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from mtpsd.ablations import REFERENCE, ablation_of
from mtpsd.config import resolve
from mtpsd.config.resolved import refresh_resolved
from mtpsd.errors import MtpsdError
from mtpsd.evaluation.plan import evaluation_grid
from mtpsd.training.launch import (
    cpu_threads_per_job,
    train_command_shell,
    train_num_gpus,
)
from mtpsd.plotting import ABLATION_FIGURE, FIGURES
from mtpsd.settings import parse_setting
from mtpsd.workflow_env import (
    export_source_dir,
    placeholder_message,
    unset_placeholders,
)
from mtpsd.workflow_lock import record_lock_holder, recover_stale_lock

validate(config, schema="../schemas/config.schema.yaml")

# `--use-conda`: workflow/envs/mtp.yaml installs this checkout by `-e ${MTPSD_SOURCE}`,
# which must not resolve against the conda prefix (mtpsd.workflow_env explains).
export_source_dir(workflow.basedir)

# A run killed hard (SIGKILL, power loss) leaves Snakemake's lock behind: before Snakemake
# locks, remove it when no process holds it, and refuse a run when one does
# (mtpsd.workflow_lock); onstart records which Snakemake holds the lock.
if workflow.is_main_process:
    try:
        recover_stale_lock()
    except MtpsdError as err:
        raise WorkflowError(str(err))


onstart:
    if workflow.is_main_process:
        record_lock_holder()


try:
    CFG = resolve(config)
    RUN_CFG = {run: resolve(config, run) for run in CFG.run_names}
except MtpsdError as err:
    raise WorkflowError(f"bad config: {err}")

RUNS = list(CFG.run_names)
# Runs that evaluate a published MTP checkpoint (`checkpoint:` set) are not trained.
IMPORTED_RUNS = [r for r in RUNS if RUN_CFG[r].checkpoint]
TRAINED_RUNS = [r for r in RUNS if r not in IMPORTED_RUNS]
NEVER = "(?!x)x"  # a regex that matches nothing (empty alternation guard)


def names_regex(names):
    """Wildcard constraint matching exactly the given names."""
    return "|".join(sorted(set(names))) or NEVER


SCRATCH_MODELS = [c.model.name for c in RUN_CFG.values() if c.model.source == "scratch"]
PRETRAINED_MODELS = [
    c.model.name for c in RUN_CFG.values() if c.model.source == "pretrained"
]


# The merged Snakemake config, which the resolve rules pass to `mtpsd resolve-config` from the
# environment: as params, a changed value would re-run them, which Snakemake 9 mishandles
# (mtpsd.config.resolved).
os.environ["MTPSD_CONFIG_JSON"] = json.dumps(config, sort_keys=True)


envvars:
    "MTPSD_CONFIG_JSON",


def dry_run_requested(argv=sys.argv):
    """Whether this snakemake invocation is a dry run (-n, --dry-run, or -n in a cluster such
    as -np); `workflow.dryrun` is not set yet while the Snakefile is parsed."""
    for arg in argv[1:]:
        if arg in ("--dry-run", "--dryrun", "--just-print"):
            return True
        if arg.startswith("-") and not arg.startswith("--") and "n" in arg[1:]:
            return True
    return False


if workflow.is_main_process and unset_placeholders(workflow.resource_settings):
    # the SLURM profile as shipped: stop before any sbatch (a dry run only warns)
    _message = placeholder_message(unset_placeholders(workflow.resource_settings))
    if not dry_run_requested():
        raise WorkflowError(_message)
    print(f"note: {_message}", file=sys.stderr)

if workflow.is_main_process and not dry_run_requested():
    # an overlay or an edited value: rewrite stale resolved configs before the DAG is built
    refresh_resolved("results/config.json", CFG)
    for _run in RUNS:
        refresh_resolved(f"results/runs/{_run}/config.json", RUN_CFG[_run])


def section_params(run, *sections):
    """JSON of the config sections a step depends on, for its params: editing one
    section re-runs only the steps that read it (config JSON inputs are ancient())."""
    cfg = CFG.to_dict() if run is None else RUN_CFG[run].to_dict()
    return json.dumps({s: cfg[s] for s in sections}, sort_keys=True)


def global_params(*sections):
    """A params function: JSON of global config sections a rule reads."""

    def params(wildcards):
        return section_params(None, *sections)

    return params


def base_model_dir(wildcards):
    """Base model directory of a run (trained from scratch or imported)."""
    return f"results/models/{RUN_CFG[wildcards.run].model.name}"


def model_run(model):
    """The first run whose base model is `model` (runs sharing a model agree on it)."""
    return next(r for r, c in RUN_CFG.items() if c.model.name == model)


def model_run_config(wildcards):
    """Resolved config of the run that builds base model `wildcards.model` (its seed)."""
    return f"results/runs/{model_run(wildcards.model)}/config.json"


def model_config_params(wildcards):
    """Config sections that decide how base model `wildcards.model` is built."""
    return section_params(model_run(wildcards.model), "seed", "data", "model")


# ---- helpers of train.smk -------------------------------------------------------


def run_has_own_data(run):
    """A run whose `data:` differs from the global one (the Magpie data ablation) trains on
    its own prepared split, results/runs/{run}/data/; the test split stays the global one.
    """
    return RUN_CFG[run].to_dict()["data"] != CFG.to_dict()["data"]


OWN_DATA_RUNS = [r for r in TRAINED_RUNS if run_has_own_data(r)]


def train_data_file(wildcards):
    """Training JSONL of a run: its own (OWN_DATA_RUNS) or the global one."""
    if wildcards.run in OWN_DATA_RUNS:
        return f"results/runs/{wildcards.run}/data/train.jsonl"
    return "results/data/train.jsonl"


def pretrained_source(wildcards):
    """model.pretrained of the runs whose base model is `wildcards.model`."""
    sources = {
        c.model.pretrained for c in RUN_CFG.values() if c.model.name == wildcards.model
    }
    if len(sources) != 1:
        raise WorkflowError(
            f"model '{wildcards.model}': runs disagree on model.pretrained ({sources})"
        )
    return sources.pop()


def train_config_params(wildcards):
    """Config sections train_mtp reads (editing them re-runs training)."""
    return section_params(wildcards.run, "seed", "model", "train")


def train_launcher(wildcards):
    """`mtpsd` or `accelerate launch --config_file X -m mtpsd` (train.accelerate_config);
    already shell-quoted."""
    return train_command_shell(RUN_CFG[wildcards.run])


def training_threads(side_by_side, most):
    """A threads function: --cores shared out among the trainings that may run at once (one
    per scratch base model, or one per trained run), so that the seeds and ablations overlays
    train side by side (mtpsd.training.launch.cpu_threads_per_job). A function, so that it is
    evaluated only for jobs that exist (a profile without scratch models has no pretraining);
    `workflow._cores` is None without --cores (cluster runs), where `workflow.cores` raises.
    """

    def threads(wildcards):
        return cpu_threads_per_job(workflow._cores, len(set(side_by_side)), most)

    return threads


def train_gpus(wildcards):
    """GPUs the training job needs (from the accelerate config; 1 without one)."""
    return train_num_gpus(RUN_CFG[wildcards.run])


def imported_checkpoint_args(wildcards):
    """import-checkpoint arguments of a run with `checkpoint:` (and `mtp_token:` if set),
    as a list (quoted element by element with :q)."""
    cfg = RUN_CFG[wildcards.run]
    args = ["--source", cfg.checkpoint]
    if isinstance(cfg.mtp_token, int):
        args += ["--mtp-token-id", str(cfg.mtp_token)]
    elif cfg.mtp_token is not None:
        args += ["--mtp-token", cfg.mtp_token]
    return args


def stage_params(*sections):
    """A params function: JSON of the run's config sections a rule reads."""

    def params(wildcards):
        return section_params(wildcards.run, *sections)

    return params


def train_checkpoint_dir(wildcards):
    """Intermediate checkpoints: not an output, so they survive a failed job (resume)."""
    return f"results/runs/{wildcards.run}/checkpoints"


# ---- helpers of decode.smk ------------------------------------------------------


def decode_targets():
    """decode.settings of every run (JSONL + summary)."""
    out = []
    for run in RUNS:
        for s in RUN_CFG[run].decode.settings:
            out += [
                f"results/runs/{run}/decode/{s}.jsonl",
                f"results/runs/{run}/decode/{s}.summary.json",
            ]
    return out


def decode_summaries():
    """The batch-1 speed runs' summaries (summarize -> speed.csv -> figure 9)."""
    return [t for t in decode_targets() if t.endswith(".summary.json")]


def decode_args(wildcards):
    """CLI arguments of one setting, as a list (quoted element by element with :q)."""
    cfg = RUN_CFG[wildcards.run]
    strategy, k, tau = parse_setting(wildcards.setting, k_max=cfg.decode.k_max)
    args = [
        "--strategy",
        strategy,
        "--k",
        str(k),
        "--tau",
        str(tau),
        "--max-new-tokens",
        str(cfg.decode.max_new_tokens),
        "--dtype",
        cfg.model.dtype,
    ]
    if cfg.decode.speed_prompts is not None:
        args += ["--limit", str(cfg.decode.speed_prompts)]
    if cfg.model.chat_template:
        args.append("--chat-template")
    if cfg.decode.engine != "auto":
        args += ["--engine", cfg.decode.engine]
    if cfg.decode.convention != "project":
        args += ["--convention", cfg.decode.convention]
    return args


# ---- helpers of evaluate.smk ----------------------------------------------------

EVAL_CREATIVE = "mtpsd_creative_writing"
EVAL_SYNTH = "mtpsd_synth_math"


def eval_run_targets(run):
    """Every evaluation JSON of one run: final sweep, step-0 at k=1, intermediate checkpoints
    (imported checkpoints: the final sweep and step 0); the list `mtpsd plan` sizes."""
    grid = evaluation_grid(RUN_CFG[run], imported=run in IMPORTED_RUNS)
    return [
        f"results/runs/{run}/eval/{task}/{ckpt}/{setting}.json"
        for task, ckpt, setting in grid
    ]


def eval_targets():
    """Evaluation JSONs of all runs (input of summarize)."""
    return [t for run in RUNS for t in eval_run_targets(run)]


def eval_train_metrics():
    """Training metrics of every trained run."""
    return [f"results/runs/{run}/train_metrics.jsonl" for run in TRAINED_RUNS]


def eval_checkpoint_dir(wildcards):
    """The checkpoint directory the job reads (step 0 of an imported checkpoint: its base
    model, the paper's "Baseline Step 0, k=1"; k=1 never feeds <MTP>)."""
    run, ckpt = wildcards.run, wildcards.ckpt
    if ckpt == "step0":
        if run in IMPORTED_RUNS:
            return base_model_dir(wildcards)
        return f"results/runs/{run}/mtp_init"
    if ckpt == "final":
        return f"results/runs/{run}/checkpoint"
    return f"results/runs/{run}/checkpoints/step_{int(ckpt[4:]):06d}"


def eval_checkpoint_input(wildcards):
    """The declared output the job waits for (intermediate steps come with the final one)."""
    if wildcards.ckpt == "step0":
        return eval_checkpoint_dir(wildcards)
    return f"results/runs/{wildcards.run}/checkpoint"


# Tasks whose documents are our prepared test split when it has their source.
EVAL_ON_TEST_SPLIT = {EVAL_SYNTH: "synthetic", "mtpsd_gsm8k_cot": "gsm8k"}


def eval_data_file(wildcards):
    """Local data of the task: eval.data_files[task], else results/data/test.jsonl for
    tasks whose source is the prepared test split (synthetic math; GSM8K when
    data.test_source is gsm8k), else none (the task's hub dataset)."""
    cfg = RUN_CFG[wildcards.run]
    if wildcards.task in cfg.eval.data_files:
        return [cfg.eval.data_files[wildcards.task]]
    if EVAL_ON_TEST_SPLIT.get(wildcards.task) == cfg.data.test_source:
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


# ---- helpers of figures.smk -----------------------------------------------------

# Figure CLI name -> file stem (the library's list).
FIGURE_STEMS = {name: stem for name, (stem, _caption) in FIGURES.items()}
TABLES = ["table01_strategies", "table02_paper_vs_ours"]


# Runs that set one of the paper's ablation options (config/ablations.yaml): the report
# then has an ablation section and figure 11.
ABLATION_RUNS = [r for r in RUNS if ablation_of(RUN_CFG[r]) != REFERENCE]


def ablation_figure_targets():
    """Figure 11 (PNG + PDF) when the config has ablation runs, else nothing."""
    if not ABLATION_RUNS:
        return []
    return [f"figures/{ABLATION_FIGURE[0]}.{ext}" for ext in ("png", "pdf")]


def figure_targets():
    """Every figure (PNG + PDF), table, number file and the report: for rule all."""
    out = [
        f"figures/{s}.{ext}" for s in FIGURE_STEMS.values() for ext in ("png", "pdf")
    ]
    out += ablation_figure_targets()
    out += [f"paper/generated/{t}.{ext}" for t in TABLES for ext in ("md", "tex")]
    out += [
        "paper/generated/numbers.json",
        "paper/generated/numbers.tex",
        "paper/report.md",
    ]
    return out


def chunks_decode_file(wildcards):
    """Decode JSONL for figure 1: the first run's ConfAdapt setting closest to tau=0.9."""
    run = RUNS[0]
    settings = RUN_CFG[run].decode.settings
    ca = [s for s in settings if s.startswith("confadapt-tau")]
    if not ca:
        raise WorkflowError(
            f"run {run}: decode.settings has no confadapt-tau* setting for figure 1"
        )
    best = min(ca, key=lambda s: abs(float(s[len("confadapt-tau") :]) - 0.9))
    return f"results/runs/{run}/decode/{best}.jsonl"


def cq_teacher(wildcards):
    """Teacher of figure 6: the step-0 model, or the base model for imported runs."""
    if wildcards.run in IMPORTED_RUNS:
        return base_model_dir(wildcards)
    return f"results/runs/{wildcards.run}/mtp_init"


def confidence_quality_args(wildcards):
    """k of the proposals scored for figure 6: the run's training k_max."""
    return [
        "--k",
        str(RUN_CFG[wildcards.run].train.k_max),
        "--n",
        str(RUN_CFG[wildcards.run].eval.confidence_prefixes),
    ]


# ---- rule all -------------------------------------------------------------------


def all_targets():
    """Everything the default DAG builds: decodes, the evaluation sweep and its summary,
    every figure and table, and the paper report."""
    return decode_targets() + ["results/summary/results.csv"] + figure_targets()


# ---- the plan ------------------------------------------------------------------------


def print_plan():
    """`mtpsd plan` of this config on stderr, once per invocation (dry runs included), before a
    job starts: GPU-hours per run, rule and task on the GPU found here (gpus.smk), MTPSD_GPU, or
    an H100; measured figures where results/bench/ has them, else the stated time model.
    """
    from mtpsd.evaluation.plan import plan_text

    runs = {run: (RUN_CFG[run], run in IMPORTED_RUNS) for run in RUNS}
    notes = (GPU_LIMIT.line(),) if GPU_LIMIT is not None else ()
    if GPU_LIMIT is not None and GPU_LIMIT.limit is not None:
        notes += tuple(
            f"train_mtp of {run} needs {n} GPUs (train.accelerate_config), more than the {GPU_LIMIT.limit} "
            "here: Snakemake will not start it (config/paper_1gpu.yaml trains on one)"
            for run in TRAINED_RUNS
            if (n := train_num_gpus(RUN_CFG[run])) > GPU_LIMIT.limit
        )
    try:
        text = plan_text(
            runs,
            requested=os.environ.get("MTPSD_GPU") or None,
            gpu_names=GPUS.names if GPUS is not None else (),
            notes=notes,
        )
    except MtpsdError as err:
        raise WorkflowError(f"plan: {err}")
    print(text, file=sys.stderr)


if workflow.is_main_process:
    print_plan()
