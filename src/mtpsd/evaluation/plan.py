"""Expected device hours of the DAG's decoding work (``mtpsd plan``), from measured speeds.

Work (the task sizes; arithmetic on the config, nothing assumed about speed):

- evaluate jobs (:func:`evaluation_grid`, the same list the workflow expands): per job
  ``ceil(documents / eval.batch_size)`` batches, each running at most
  ``ceil(budget / tokens per pass)`` forward passes (a batch runs as long as its longest
  member). Documents: the task's test split (:data:`TASK_DOCS`, dataset facts) or its local
  file, capped by ``eval.limit``. Budget: ``generation_budget`` (the task's own
  ``max_gen_toks``). Tokens per pass: Static k -> k; ConfAdapt -> the paper's effective k for
  the same model, task and tau (``paper_results.csv``) when it printed one, else 1; verify
  and every intermediate checkpoint -> 1. Every document is counted at its full budget, so
  the work is an upper bound (real answers end earlier, at an end id).
- decode jobs (the batch-1 speed runs): ``decode.speed_prompts`` (else the test split)
  prompts x ``ceil(decode.max_new_tokens / tokens per pass)`` passes.

Speed: forward passes per second (one pass decodes the whole batch) of the same model,
dtype and batch size, measured (:func:`read_figures`):

- ``results/bench/gpu/<gpu>/*.json``: measured on that GPU (``--gpu <gpu>``);
- ``results/bench/*.json`` and the packaged ``mtpsd/measured_speed.json`` (the README's
  measured batch-1 CPU figures): measured on CPUs.

A figure file is ``benchmarks/decode_speed.py``'s output or any JSON with these keys
(missing ones take the defaults in brackets)::

    {"model_name": "l3-8b-magpie",         # config model.name [else the file stem or "model"]
     "device": "NVIDIA H100 80GB HBM3", "dtype": "bfloat16", "batch_size": 32,   # [1]
     "results": [{"method": "static-k1",     # a setting name; [static-k1]
                  "forward_passes": 51200,   # model calls (a call decodes the whole batch)
                  "wall_s": 812.5,           # or "passes_per_s" directly, or "tokens_per_s"
                  "eff_k": 1.0}]}            #   with "eff_k" (tokens per pass per sequence)

Hours = passes / passes-per-second of the figure for the same setting, else of the same
model's static-k1 figure (marked ``~``: a pass over k tokens and masks can cost more than
one over a single token). A job without a figure is listed as unmeasured, never guessed.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from mtpsd.config import seed_base
from mtpsd.errors import MtpsdError

# Test documents of each task's hub split (dataset facts: openai/gsm8k main test,
# math-ai/aime25 test, Idavidrein/gpqa gpqa_main train, SaylorTwift/bbh 27 subtasks,
# google/IFEval train, abisee/cnn_dailymail 3.0.0 test, euclaise/writingprompts test).
TASK_DOCS = {
    "mtpsd_gsm8k_cot": 1319, "aime25": 30, "gpqa_main_cot_n_shot": 448, "bbh_cot_fewshot": 6511,
    "ifeval": 541, "mtpsd_cnn_dailymail": 11490, "mtpsd_creative_writing": 15138,
}
CPU = "cpu"
# our task -> its name in paper_results.csv (mtpsd.reporting.summarize.TASK_NAMES; kept here without pandas)
PAPER_TASK_NAMES = {"mtpsd_gsm8k_cot": "gsm8k", "mtpsd_cnn_dailymail": "cnn_dailymail", "aime25": "aime25",
                    "gpqa_main_cot_n_shot": "gpqa_main", "bbh_cot_fewshot": "bbh", "ifeval": "ifeval"}
COMMITTED_FIGURES = Path(__file__).resolve().parents[1] / "measured_speed.json"
PLAN_GPU_MEMORY_GIB = 79.6  # an 80 GB H100/A100 as torch sees it: the batches eval.batch_size null plans


@dataclass(frozen=True)
class Job:
    run: str
    rule: str           # "evaluate" | "decode"
    task: str           # lm-eval task, or "test prompts" for decode
    ckpt: str
    setting: str
    documents: int
    batch_size: int
    budget: int
    tokens_per_pass: float

    @property
    def passes(self) -> int:
        return math.ceil(self.documents / self.batch_size) * math.ceil(self.budget / self.tokens_per_pass)


@dataclass(frozen=True)
class SpeedFigure:
    model: str
    device: str         # "cpu" or the GPU folder name
    dtype: str
    batch_size: int
    method: str
    passes_per_s: float
    source: str


# ---- the grid ------------------------------------------------------------------------


def final_settings(cfg) -> list[str]:
    """Decoding settings of the final checkpoint: static k, ConfAdapt tau, verify."""
    from mtpsd.settings import format_setting

    out = [format_setting("static", k=k) for k in cfg.decode.static_k]
    out += [format_setting("confadapt", tau=t) for t in cfg.decode.confadapt_tau]
    if cfg.decode.verify_k > 0:
        out.append(format_setting("verify", k=cfg.decode.verify_k))
    return out


def evaluation_grid(cfg, *, imported: bool) -> list[tuple[str, str, str]]:
    """``(task, ckpt, setting)`` of every evaluation of one run: the final sweep, and for a
    trained run (not an imported checkpoint) step 0 at k=1 and the intermediate checkpoints."""
    out = []
    for task in cfg.eval.tasks:
        out += [(task, "final", s) for s in final_settings(cfg)]
        if imported:
            continue
        out.append((task, "step0", "static-k1"))
        for step in cfg.eval.checkpoint_steps:
            out += [(task, f"step{step}", s) for s in cfg.eval.checkpoint_settings]
    return list(dict.fromkeys(out))


def _rows(path: str | Path) -> int | None:
    p = Path(path)
    if not p.is_file():
        return None
    with p.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def task_documents(cfg, task: str) -> int:
    """Documents one evaluation of ``task`` reads (before ``eval.limit``)."""
    if task in cfg.eval.data_files:
        n = _rows(cfg.eval.data_files[task])
        if n is not None:
            return n
    if task == "mtpsd_synth_math":
        return cfg.data.synthetic.n_test
    if task == "mtpsd_gsm8k_cot" and cfg.data.test_source == "gsm8k" and cfg.data.test_path:
        n = _rows(cfg.data.test_path)
        if n is not None:
            return n
    if task not in TASK_DOCS:
        raise MtpsdError(f"task {task!r}: no document count known; give eval.data_files[{task}]")
    return TASK_DOCS[task]


@functools.lru_cache(maxsize=1)
def _paper_confadapt_eff_k() -> dict[tuple[str, str, float], float]:
    """(paper model, paper task, tau) -> the paper's printed effective k (main variant)."""
    import csv

    path = Path(__file__).resolve().parents[1] / "paper_results.csv"
    with path.open(encoding="utf-8") as f:
        return {(r["model"], r["task"], round(float(r["param"]), 6)): float(r["eff_k"])
                for r in csv.DictReader(f)
                if r["variant"] == "main" and r["strategy"] == "confadapt" and r["eff_k"]}


def _paper_eff_k(model: str | None, task: str, tau: float) -> float | None:
    from mtpsd.reporting.paper_models import paper_model

    pm = paper_model(model)
    if pm is None:
        return None
    return _paper_confadapt_eff_k().get((pm, PAPER_TASK_NAMES.get(task, task), round(float(tau), 6)))


def tokens_per_pass(cfg, task: str, ckpt: str, setting: str) -> float:
    from mtpsd.settings import parse_setting

    strategy, k, tau = parse_setting(setting, k_max=cfg.decode.k_max)
    if strategy == "static":
        return float(k)
    if strategy == "confadapt" and ckpt == "final":
        # model.paper_model (published-checkpoint runs name the paper model they reproduce), else the name
        model = getattr(cfg.model, "paper_model", None) or cfg.model.name
        return _paper_eff_k(model, task, tau) or 1.0
    return 1.0


def run_jobs(cfg, run: str, *, imported: bool) -> list[Job]:
    """Every decoding job of one run (resolved config ``cfg``): evaluations and speed runs.
    With ``eval.batch_size: null`` each task's batch is the evaluation memory plan's for an
    80 GB GPU (:data:`PLAN_GPU_MEMORY_GIB`; 1 where the architecture cannot be read offline)."""
    from mtpsd.evaluation.memory_plan import GiB, dry_run_batches
    from mtpsd.evaluation.tasks import generation_budget

    planned = (dry_run_batches(cfg, PLAN_GPU_MEMORY_GIB * GiB) or {}) if cfg.eval.batch_size is None else {}
    jobs = []
    for task, ckpt, setting in evaluation_grid(cfg, imported=imported):
        docs = task_documents(cfg, task)
        if cfg.eval.limit is not None:
            docs = min(docs, cfg.eval.limit)
        budget = generation_budget(task, overrides=cfg.eval.max_gen_toks, default=cfg.decode.max_new_tokens)
        jobs.append(Job(run, "evaluate", task, ckpt, setting, docs, cfg.eval.batch_size or planned.get(task, 1), budget,
                        tokens_per_pass(cfg, task, ckpt, setting)))
    test = "mtpsd_gsm8k_cot" if cfg.data.test_source == "gsm8k" else "mtpsd_synth_math"
    n = task_documents(cfg, test)
    if cfg.decode.speed_prompts is not None:
        n = min(n, cfg.decode.speed_prompts)
    for setting in cfg.decode.settings:
        jobs.append(Job(run, "decode", "test prompts", "final", setting, n, 1, cfg.decode.max_new_tokens,
                        tokens_per_pass(cfg, test, "final", setting)))
    return jobs


# ---- measured speeds -------------------------------------------------------------------


def _dtype(s) -> str:
    return str(s or "").removeprefix("torch.")


def read_figures(path: str | Path, *, device: str) -> list[SpeedFigure]:
    """The speed figures of one JSON file (format in the module docstring)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MtpsdError(f"{path}: not a readable speed JSON ({e})") from None
    if not isinstance(d, dict):
        raise MtpsdError(f"{path}: expected a JSON object")
    model = str(d.get("model_name") or path.stem)
    out = []
    for r in d.get("results") or [d]:
        method = str(r.get("method", "static-k1"))
        if method.startswith("hf-"):
            continue  # HF generate baselines are not our decoder
        bs = int(r.get("batch_size", d.get("batch_size", 1)))
        if r.get("passes_per_s") is not None:
            pps = float(r["passes_per_s"])
        elif r.get("forward_passes") and r.get("wall_s"):
            pps = float(r["forward_passes"]) / float(r["wall_s"]) / (bs if r.get("per_sequence_passes") else 1)
        elif r.get("tokens_per_s") is not None:
            pps = float(r["tokens_per_s"]) / float(r.get("eff_k") or 1.0) / bs
        else:
            continue
        src = str(r.get("source") or d.get("source") or path)
        if d.get("model"):  # benchmarks/decode_speed.py names the checkpoint it timed
            src += f" (model {d['model']})"
        out.append(SpeedFigure(model, device, _dtype(r.get("dtype", d.get("dtype"))), bs, method, pps, src))
    return out


def collect_figures(bench_dir: str | Path = "results/bench", *, gpu: str | None = None,
                    committed: Path | None = COMMITTED_FIGURES) -> list[SpeedFigure]:
    """GPU figures of ``<bench_dir>/gpu/<gpu>/`` when ``gpu`` is given, else the CPU figures
    (``<bench_dir>/*.json`` and the committed table)."""
    bench_dir = Path(bench_dir)
    if gpu is not None:
        return [f for p in sorted((bench_dir / "gpu" / gpu).glob("*.json")) for f in read_figures(p, device=gpu)]
    files = sorted(bench_dir.glob("*.json"))
    out = [f for p in files for f in read_figures(p, device=CPU)]
    if committed is not None and committed.is_file():
        table = json.loads(committed.read_text(encoding="utf-8"))
        for entry in table["figures"]:
            tmp = dict(entry)
            out += [SpeedFigure(str(tmp["model_name"]), CPU, _dtype(tmp["dtype"]), int(tmp.get("batch_size", 1)),
                                str(r["method"]), float(r["tokens_per_s"]) / float(r.get("eff_k") or 1.0)
                                / int(tmp.get("batch_size", 1)), str(tmp["source"]))
                    for r in tmp["results"]]
    return out


def _eval_dtype(cfg, rule: str, device: str) -> str:
    dt = (cfg.eval.dtype or cfg.model.dtype) if rule == "evaluate" else cfg.model.dtype
    if dt == "auto":
        return "float32" if device == CPU else "bfloat16"
    return dt


def find_figure(figures: list[SpeedFigure], model: str, run: str, dtype: str, batch_size: int,
                setting: str) -> tuple[SpeedFigure | None, bool]:
    """The figure for this model, dtype and batch size: the setting's own (exact) or static-k1's.
    A seed replicate ``<model>-seed<N>`` (config/seeds.yaml: same architecture, other seeds)
    uses ``<model>``'s figures."""
    names = {model, seed_base(model)}
    mine = [f for f in figures if f.dtype == dtype and f.batch_size == batch_size
            and (f.model in names or f.model == run or f"runs/{run}/" in f.source)]
    for f in mine:
        if f.method == setting:
            return f, True
    for f in mine:
        if f.method == "static-k1":
            return f, False
    return None, False


# ---- the plan --------------------------------------------------------------------------


def resolve_runs(raw: dict) -> dict[str, tuple[object, bool]]:
    """run -> (resolved config, imported?) of a merged raw config (a run with ``checkpoint:``
    evaluates a published checkpoint: no step-0 or intermediate evaluations)."""
    from mtpsd.config import resolve

    glob = resolve(raw)
    out = {}
    for run in glob.run_names:
        cfg = resolve(raw, run)
        out[run] = (cfg, bool(getattr(cfg, "checkpoint", None)))
    return out


@dataclass
class PlanRow:
    run: str
    rule: str
    task: str
    jobs: int
    documents: int
    batch_size: int
    budget: int
    passes: int
    hours: float | None      # None: some job has no measured figure
    approx: bool             # some job used the static-k1 pass rate
    unmeasured_jobs: int


def plan(runs: dict[str, tuple[object, bool]], figures: list[SpeedFigure], *, device: str = CPU) -> list[PlanRow]:
    """One row per run x rule x task. ``runs``: run -> (resolved config, imported?)."""
    rows: dict[tuple[str, str, str], PlanRow] = {}
    for run, (cfg, imported) in runs.items():
        for job in run_jobs(cfg, run, imported=imported):
            key = (run, job.rule, job.task)
            row = rows.get(key) or PlanRow(run, job.rule, job.task, 0, job.documents, job.batch_size, job.budget,
                                           0, 0.0, False, 0)
            rows[key] = row
            row.jobs += 1
            row.passes += job.passes
            fig, exact = find_figure(figures, cfg.model.name, run, _eval_dtype(cfg, job.rule, device),
                                     job.batch_size, job.setting)
            if fig is None:
                row.unmeasured_jobs += 1
                row.hours = None
            else:
                row.approx |= not exact
                if row.hours is not None:
                    row.hours += job.passes / fig.passes_per_s / 3600
    return list(rows.values())


def default_device(bench_dir: str | Path = "results/bench") -> str:
    """The GPU whose figures exist under ``<bench_dir>/gpu/`` (the first by name), else "cpu"."""
    gpus = sorted(p.name for p in (Path(bench_dir) / "gpu").glob("*") if p.is_dir())
    return gpus[0] if gpus else CPU


def render(rows: list[PlanRow], *, device: str, figures: list[SpeedFigure]) -> str:
    """The plan as Markdown: per run x rule x task, totals, and what is measured."""
    where = f"GPU `{device}` (results/bench/gpu/{device}/)" if device != CPU else "CPU"
    lines = [f"# Decoding plan ({where} speed figures)", "",
             "Forward passes are an upper bound (every document at its full generation budget); hours = "
             "passes / measured passes per second of the same model, dtype and batch size "
             "(`~`: static-k1's rate used for other settings). `unmeasured`: no such figure; nothing is guessed.", "",
             "| run | rule | task | jobs | documents | batch | budget | forward passes | hours |",
             "|---|---|---|---|---|---|---|---|---|"]
    total, unmeasured = 0.0, []
    for r in rows:
        if r.hours is None:
            h = f"unmeasured ({r.unmeasured_jobs}/{r.jobs} jobs)"
            unmeasured.append(r)
        else:
            h = ("~" if r.approx else "") + f"{r.hours:.2f}"
            total += r.hours
        lines.append(f"| {r.run} | {r.rule} | {r.task} | {r.jobs} | {r.documents} | {r.batch_size} | {r.budget} "
                     f"| {r.passes:,} | {h} |")
    passes = sum(r.passes for r in rows)
    lines += ["", f"Total: {sum(r.jobs for r in rows)} jobs, {passes:,} forward passes; measured part "
                  f"{total:.2f} {'GPU-' if device != CPU else 'CPU '}hours"
              + (f"; {len(unmeasured)} row(s) unmeasured ({sum(r.passes for r in unmeasured):,} passes)."
                 if unmeasured else ".")]
    for r in rows:
        if r.rule == "evaluate" and r.task == "mtpsd_gsm8k_cot":
            lines.append(f"- {r.run}: its GSM8K evaluations ({r.jobs} jobs) fit in 2 hours at >= "
                         f"{r.passes / 7200:,.1f} forward passes/s (batch {r.batch_size}).")
    kinds = sorted({(f.model, f.dtype, f.batch_size) for f in figures})
    lines += ["", "Figures read: " + (", ".join(f"{m} {d} batch {b}" for m, d, b in kinds) or "none")
              + (" (measured on CPUs)." if device == CPU else f" (measured on {device}).")]
    if device == CPU:
        lines.append("GPU figures: unmeasured (none under results/bench/gpu/); CPU hours do not transfer to a GPU.")
    return "\n".join(lines) + "\n"
