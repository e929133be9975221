"""Expected device hours of the DAG's GPU work (``mtpsd plan``): measured figures where they
exist, else a stated model on a named GPU.

**Work** (arithmetic on the config; the same lists the workflow expands):

- evaluate jobs (:func:`evaluation_grid`): per job ``ceil(documents / eval.batch_size)``
  batches, each running at most ``ceil(budget / tokens per pass)`` forward passes (a batch runs
  as long as its longest member). Documents: the task's test split (:data:`TASK_DOCS`, dataset
  facts) or its local file, capped by ``eval.limit``. Budget: ``generation_budget`` (the task's
  own ``max_gen_toks``). Tokens per pass: Static k -> k; ConfAdapt -> the paper's effective k
  for the same model, task and tau (``paper_results.csv``) when it printed one, else 1; verify
  and every intermediate checkpoint -> 1. Every document is counted at its full budget, so the
  work is an upper bound (real answers end earlier, at an end id).
- decode jobs (the batch-1 speed runs): ``decode.speed_prompts`` prompts x
  ``ceil(decode.max_new_tokens / tokens per pass)`` passes.
- confidence_quality (figure 6): ``eval.confidence_prefixes`` x 2 uncached passes (student,
  teacher) over one training-length text.
- train_mtp: ``train.steps`` x ``train.global_batch_size`` sequences of the mean packed length
  ``N + M (E[k] - 1)`` (``k ~ U{2..k_max}``: ``E[k] - 1 = k_max / 2``; Static k: ``k_max - 1``).

**Time**, per job: *measured* where a figure of the same model, dtype, batch size and setting
exists (:func:`read_figures`: ``results/bench/gpu/<gpu>/*.json`` for a GPU, the packaged
``measured_speed.json`` and ``results/bench/*.json`` for the CPU; static-k1's rate for another
setting is marked ``~``; training: ``benchmarks/train_segment.py``'s ``train_<arch>.json``),
else on a GPU an *estimate (model)* (CPU work without a figure stays "unmeasured"):

- a decoding pass moves the weights once (every matrix; an untied input embedding is a lookup)
  plus the KV cache of the batch at the mean context ``prompt + budget / 2`` (every document
  runs its full budget); it takes ``max(bytes / (bandwidth x MEMORY_EFFICIENCY), FLOPs / (peak
  x COMPUTE_EFFICIENCY))`` with FLOPs ``2 x matrix params x batch x width`` (+ attention over
  the context), width = tokens fed per row: ``2k - 1`` for Static k and verify (last chunk +
  masks), ``eff_k + k_max - 1`` for ConfAdapt. Each batch first prefills its prompts
  (:data:`PROMPT_TOKENS`, stated assumptions). float32 runs at the FP32 peak (PyTorch leaves
  TF32 off), bfloat16 at the dense BF16 tensor peak;
- training takes ``(6 + 2 + 2) x params x tokens`` FLOPs (student forward and backward, the
  frozen teacher's forward, and with gradient checkpointing the recomputed forward) at
  ``TRAIN_MFU`` of the BF16 peak per GPU; GPU-hours = wall time x GPUs.

Peak figures (:data:`GPUS`) are NVIDIA's datasheet numbers for the SXM parts; the efficiencies
are assumptions, stated, not measured here. A figure file is ``benchmarks/decode_speed.py``'s
output or any JSON with these keys (missing ones take the defaults in brackets)::

    {"model_name": "l3-8b-magpie",         # config model.name [else the file stem or "model"]
     "device": "NVIDIA H100 80GB HBM3", "dtype": "bfloat16", "batch_size": 32,   # [1]
     "results": [{"method": "static-k1",     # a setting name; [static-k1]
                  "forward_passes": 51200,   # model calls (a call decodes the whole batch)
                  "wall_s": 812.5,           # or "passes_per_s" directly, or "tokens_per_s"
                  "eff_k": 1.0}]}            #   with "eff_k" (tokens per pass per sequence)

Nothing here imports torch: Snakemake prints the plan while it parses the workflow.
"""

from __future__ import annotations

import functools
import json
import math
import re
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
# Prompt tokens per document (prefill and KV cache of the time model; assumptions at ~4 characters
# per token, stated, not measured): GSM8K: our YAML's 8 exemplars (2,349 characters) + a test
# question (240 on average, data/gsm8k) + chat headers; BBH: lm-eval's 3 exemplars per subtask
# (2,664 characters on average over the 27) + a question; GPQA: 5 exemplars + the question, each a
# long question with four choices; CNN/DailyMail: an article (781 words on average, See et al.
# 2017); AIME25, IFEval, creative writing: one problem, instruction or prompt; the speed runs'
# GSM8K question zero-shot.
PROMPT_TOKENS = {
    "mtpsd_gsm8k_cot": 800, "aime25": 300, "gpqa_main_cot_n_shot": 1800, "bbh_cot_fewshot": 800,
    "ifeval": 200, "mtpsd_cnn_dailymail": 1100, "mtpsd_creative_writing": 60, "mtpsd_synth_math": 40,
    "test prompts": 100,
}
CPU = "cpu"
# our task -> its name in paper_results.csv (mtpsd.reporting.summarize.TASK_NAMES; kept here without pandas)
PAPER_TASK_NAMES = {"mtpsd_gsm8k_cot": "gsm8k", "mtpsd_cnn_dailymail": "cnn_dailymail", "aime25": "aime25",
                    "gpqa_main_cot_n_shot": "gpqa_main", "bbh_cot_fewshot": "bbh", "ifeval": "ifeval"}
COMMITTED_FIGURES = Path(__file__).resolve().parents[1] / "measured_speed.json"
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
PLAN_GPU_MEMORY_GIB = 79.6  # an 80 GB H100/A100 as torch sees it: the batches eval.batch_size null plans


# ---- the GPUs and the time model's assumptions -------------------------------------------


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet peaks of one GPU (dense; no sparsity)."""

    key: str
    name: str
    memory_gb: float
    bandwidth_tb_s: float  # HBM
    bf16_tflops: float     # tensor cores, dense
    fp32_tflops: float     # FP32 without TF32

    def peak_flops(self, dtype: str) -> float:
        return (self.fp32_tflops if dtype == "float32" else self.bf16_tflops) * 1e12


GPUS = {
    "h100": GpuSpec("h100", "H100 SXM 80 GB", 80, 3.35, 989, 67),
    "h200": GpuSpec("h200", "H200 SXM 141 GB", 141, 4.8, 989, 67),
    "a100": GpuSpec("a100", "A100 SXM 80 GB", 80, 2.039, 312, 19.5),
}
MEMORY_EFFICIENCY = 0.7   # share of the HBM bandwidth a decoding pass reaches (assumed)
COMPUTE_EFFICIENCY = 0.6  # share of the peak FLOP/s a decoding or prefill pass reaches (assumed)
TRAIN_MFU = 0.4           # share of the BF16 peak a training step reaches (assumed)


def gpu_key(name: str | None) -> str | None:
    """``"NVIDIA H100 80GB HBM3"`` or ``"nvidia-h200"`` -> a key of :data:`GPUS`, else None."""
    low = re.sub(r"[^a-z0-9]", "", str(name or "").lower())
    return next((k for k in GPUS if k in low), None)


# ---- architectures (no torch: config arithmetic) ---------------------------------------------


@dataclass(frozen=True)
class Arch:
    """What the time model needs of an architecture."""

    name: str
    params: int          # every parameter once (tied embeddings once)
    matrix_params: int   # parameters a pass reads and multiplies (an untied input embedding is a lookup)
    layers: int
    q_dim: int           # heads x head_dim
    kv_dim: int          # kv heads x head_dim

    def kv_bytes_per_token(self, dtype: str) -> int:
        return 2 * self.layers * self.kv_dim * _BYTES[dtype]


def arch_of_config(cfg: dict, name: str) -> Arch:
    """Parameter counts of a Llama/Qwen3-style decoder from its ``config.json`` values (no
    biases; Qwen3's q/k norms; tests check the counts against a meta-device model)."""
    h, inter, layers = int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    hd = int(cfg.get("head_dim") or h // heads)
    vocab, tied = int(cfg["vocab_size"]), bool(cfg.get("tie_word_embeddings", False))
    q, kv = heads * hd, kv_heads * hd
    layer = h * q + 2 * h * kv + q * h + 3 * h * inter + 2 * h
    if cfg.get("model_type") == "qwen3":
        layer += 2 * hd  # q_norm, k_norm
    embed = vocab * h
    params = layers * layer + embed + h + (0 if tied else embed)
    return Arch(name, params, params - (0 if tied else embed), layers, q, kv)


# The config.json values of the architectures the profiles use (benchmarks/arch/*.json, the hub
# configs; the authors' Llama checkpoint pads its vocabulary to 128384 rows). A checkpoint's own
# config.json (after import) wins over this table.
_LLAMA31_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
               "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
               "tie_word_embeddings": False}
_QWEN3_4B = {"model_type": "qwen3", "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
             "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
             "tie_word_embeddings": True}
_SMOLLM2_135M = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                 "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
                 "tie_word_embeddings": True}
KNOWN_CONFIGS = {
    "Magpie-Align/Llama-3.1-8B-Magpie-Align-SFT-v0.1": _LLAMA31_8B,
    "meta-llama/Llama-3.1-8B": _LLAMA31_8B,
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA31_8B,
    "jwkirchenbauer/L3-1-8B-Magpie-MTP": {**_LLAMA31_8B, "vocab_size": 128384},
    "Qwen/Qwen3-4B-Instruct-2507": _QWEN3_4B,
    "jwkirchenbauer/Qwen3-4B-Inst-2507-MTP": _QWEN3_4B,
    "HuggingFaceTB/SmolLM2-135M-Instruct": _SMOLLM2_135M,
}


def run_arch(cfg, run: str, results: str | Path = "results") -> Arch | None:
    """The architecture of a run's model: its imported or trained checkpoint's ``config.json``
    when present, else :data:`KNOWN_CONFIGS` by checkpoint or base model id, else the tiny
    model's configured shape (vocabulary at its cap); None when unknown."""
    results = Path(results)
    for local in (results / "runs" / run / "checkpoint", results / "models" / cfg.model.name):
        f = local / "config.json"
        if f.is_file():
            try:
                return arch_of_config(json.loads(f.read_text(encoding="utf-8")), cfg.model.name)
            except (KeyError, ValueError, TypeError, json.JSONDecodeError):
                pass
    for source in (getattr(cfg, "checkpoint", None), cfg.model.pretrained):
        if source in KNOWN_CONFIGS:
            return arch_of_config(KNOWN_CONFIGS[source], cfg.model.name)
    if cfg.model.source == "scratch":
        t = cfg.model.tiny
        return arch_of_config({"hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
                               "num_hidden_layers": t.num_layers, "num_attention_heads": t.num_heads,
                               "vocab_size": t.vocab_size}, cfg.model.name)
    return None


# ---- the grid ------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    run: str
    rule: str           # "evaluate" | "decode" | "confidence_quality"
    task: str           # lm-eval task, "test prompts" (decode) or "validation" (confidence_quality)
    ckpt: str
    setting: str
    documents: int
    batch_size: int
    budget: int
    tokens_per_pass: float
    dtype: str = "bfloat16"  # of the pass (model.dtype, or eval.dtype for evaluate; auto -> bf16 on GPU)
    width: int = 1           # tokens fed per row per decoding pass
    prompt: int = 0          # prompt tokens per document (prefilled once per batch)

    @property
    def passes(self) -> int:
        return math.ceil(self.documents / self.batch_size) * math.ceil(self.budget / self.tokens_per_pass)


@dataclass(frozen=True)
class TrainJob:
    run: str
    steps: int
    global_batch: int
    packed_length: float  # mean tokens per packed sequence
    gpus: int
    recompute: bool       # gradient checkpointing

    rule = "train_mtp"
    task = "training"

    @property
    def tokens(self) -> float:
        return self.steps * self.global_batch * self.packed_length

    @property
    def flops_per_param(self) -> float:
        """FLOPs per parameter and token: 6 (student forward + backward) + 2 (teacher forward)
        + 2 (recomputed student forward under gradient checkpointing)."""
        return 6 + 2 + (2 if self.recompute else 0)


@dataclass(frozen=True)
class SpeedFigure:
    model: str
    device: str         # "cpu" or the GPU folder name
    dtype: str
    batch_size: int
    method: str
    passes_per_s: float
    source: str


def final_settings(cfg) -> list[str]:
    """Decoding settings of the final checkpoint: static k, ConfAdapt tau, verify."""
    from mtpsd.settings import format_setting

    out = [format_setting("static", k=k) for k in cfg.decode.static_k]
    out += [format_setting("confadapt", tau=t) for t in cfg.decode.confadapt_tau]
    if cfg.decode.verify_k > 0:
        out.append(format_setting("verify", k=cfg.decode.verify_k))
    return out


def evaluation_grid(cfg, *, imported: bool) -> list[tuple[str, str, str]]:
    """``(task, ckpt, setting)`` of every evaluation of one run: the final sweep and step 0 at
    k=1 (the paper's "Baseline Step 0"; for an imported checkpoint its base model), and for a
    trained run the intermediate checkpoints."""
    out = []
    for task in cfg.eval.tasks:
        out += [(task, "final", s) for s in final_settings(cfg)]
        out.append((task, "step0", "static-k1"))
        if imported:
            continue
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


def pass_width(cfg, setting: str, tpp: float) -> int:
    """Tokens one decoding pass feeds per row: the last chunk plus the masks (``2k - 1`` for
    Static k and verify, ``eff_k + k_max - 1`` for ConfAdapt; 1 at k = 1)."""
    from mtpsd.settings import parse_setting

    strategy, k, _ = parse_setting(setting, k_max=cfg.decode.k_max)
    if strategy == "confadapt":
        return math.ceil(tpp) + cfg.decode.k_max - 1
    return 2 * k - 1


def _dtype_on(dtype: str, device: str) -> str:
    if dtype == "auto":
        return "float32" if device == CPU else "bfloat16"
    return dtype


def run_jobs(cfg, run: str, *, imported: bool, device: str = "gpu") -> list[Job]:
    """Every decoding job of one run (resolved config ``cfg``): evaluations, speed runs and the
    confidence-vs-quality passes. With ``eval.batch_size: null`` each task's batch is the
    evaluation memory plan's for an 80 GB GPU (:data:`PLAN_GPU_MEMORY_GIB`; 1 where the
    architecture cannot be read offline)."""
    from mtpsd.evaluation.memory_plan import GiB, dry_run_batches
    from mtpsd.evaluation.tasks import generation_budget

    planned = (dry_run_batches(cfg, PLAN_GPU_MEMORY_GIB * GiB) or {}) if cfg.eval.batch_size is None else {}
    jobs = []
    eval_dtype = _dtype_on(cfg.eval.dtype or cfg.model.dtype, device)
    model_dtype = _dtype_on(cfg.model.dtype, device)
    for task, ckpt, setting in evaluation_grid(cfg, imported=imported):
        docs = task_documents(cfg, task)
        if cfg.eval.limit is not None:
            docs = min(docs, cfg.eval.limit)
        budget = generation_budget(task, overrides=cfg.eval.max_gen_toks, default=cfg.decode.max_new_tokens)
        tpp = tokens_per_pass(cfg, task, ckpt, setting)
        jobs.append(Job(run, "evaluate", task, ckpt, setting, docs, cfg.eval.batch_size or planned.get(task, 1), budget,
                        tpp, eval_dtype, pass_width(cfg, setting, tpp), PROMPT_TOKENS.get(task, 0)))
    test = "mtpsd_gsm8k_cot" if cfg.data.test_source == "gsm8k" else "mtpsd_synth_math"
    n = task_documents(cfg, test)
    if cfg.decode.speed_prompts is not None:
        n = min(n, cfg.decode.speed_prompts)
    for setting in cfg.decode.settings:
        tpp = tokens_per_pass(cfg, test, "final", setting)
        jobs.append(Job(run, "decode", "test prompts", "final", setting, n, 1, cfg.decode.max_new_tokens, tpp,
                        model_dtype, pass_width(cfg, setting, tpp), PROMPT_TOKENS["test prompts"]))
    # figure 6: per prefix one student and one teacher pass over a training-length text, no cache
    k = cfg.train.k_max
    jobs.append(Job(run, "confidence_quality", "validation", "final", f"static-k{k}", cfg.eval.confidence_prefixes,
                    1, 2, 1.0, model_dtype, cfg.train.max_length + k - 1, 0))
    return jobs


def train_job(cfg, run: str) -> TrainJob:
    """The training of one run: steps x global batch x mean packed length (module docstring)."""
    from mtpsd.training.launch import train_num_gpus

    t = cfg.train
    regions = t.num_regions or max(1, t.max_length // (2 * t.k_max))  # mtpsd.layout.default_num_regions
    extra = t.k_max / 2 if t.random_k else t.k_max - 1  # E[k - 1], k ~ U{2..k_max}
    return TrainJob(run, t.steps, t.global_batch_size, t.max_length + regions * extra, train_num_gpus(cfg),
                    bool(t.gradient_checkpointing))


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
        if not isinstance(r, dict):
            continue
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


def gpu_dirs(bench_dir: str | Path, gpu: str) -> list[Path]:
    """Measured folders of ``gpu`` under ``<bench_dir>/gpu/``: the folder of that name, or every
    folder naming the same GPU (``--gpu h100`` finds ``nvidia-h100-80gb-hbm3/``)."""
    root = Path(bench_dir) / "gpu"
    key = gpu_key(gpu)
    return sorted(p for p in root.glob("*") if p.is_dir() and (p.name == gpu or (key and gpu_key(p.name) == key)))


def collect_figures(bench_dir: str | Path = "results/bench", *, gpu: str | None = None,
                    committed: Path | None = COMMITTED_FIGURES) -> list[SpeedFigure]:
    """Decoding figures measured on ``gpu`` (:func:`gpu_dirs`) when given, else the CPU figures
    (``<bench_dir>/*.json`` and the committed table). Files that hold no speed figure (a GPU
    check's other JSONs, training segments) give none."""
    bench_dir = Path(bench_dir)
    if gpu is not None:
        out = []
        for d in gpu_dirs(bench_dir, gpu):
            for p in sorted(d.glob("*.json")):
                if p.name.startswith("train_"):
                    continue
                try:
                    out += read_figures(p, device=gpu)
                except MtpsdError:
                    continue
        return out
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


def measured_train_seconds(bench_dir: str | Path, gpu: str, arch: Arch | None) -> tuple[float, str] | None:
    """Seconds per training sequence measured on ``gpu`` for this architecture
    (``benchmarks/train_segment.py``'s ``train_<arch>.json``: same parameter count, on CUDA)."""
    if arch is None:
        return None
    for d in gpu_dirs(bench_dir, gpu):
        for p in sorted(d.glob("train_*.json")):
            try:
                rec = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if (rec.get("params") == arch.params and rec.get("device") == "cuda" and rec.get("seconds_per_sequence")
                    and not rec.get("timed_includes_first_step")):
                return float(rec["seconds_per_sequence"]), str(p)
    return None


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


# ---- the time model --------------------------------------------------------------------


def decode_seconds(job: Job, arch: Arch, gpu: GpuSpec) -> float:
    """Estimated seconds of one decoding job on ``gpu`` (module docstring)."""
    b = _BYTES[job.dtype]
    rows = min(job.batch_size, job.documents)
    batches = math.ceil(job.documents / job.batch_size)
    per_batch = math.ceil(job.budget / job.tokens_per_pass)
    bandwidth = gpu.bandwidth_tb_s * 1e12 * MEMORY_EFFICIENCY
    compute = gpu.peak_flops(job.dtype) * COMPUTE_EFFICIENCY
    weights = arch.matrix_params * b
    ctx = job.prompt + job.budget / 2
    pass_bytes = weights + rows * ctx * arch.kv_bytes_per_token(job.dtype)
    pass_flops = 2 * arch.matrix_params * rows * job.width + 4 * rows * job.width * ctx * arch.layers * arch.q_dim
    pass_s = max(pass_bytes / bandwidth, pass_flops / compute)
    prefill_flops = 2 * arch.matrix_params * rows * job.prompt + 2 * rows * job.prompt ** 2 * arch.layers * arch.q_dim
    prefill_s = max(weights / bandwidth, prefill_flops / compute) if job.prompt else 0.0
    return batches * (prefill_s + per_batch * pass_s)


def train_seconds(job: TrainJob, arch: Arch, gpu: GpuSpec) -> float:
    """Estimated wall seconds of a training run on ``job.gpus`` of ``gpu`` (module docstring)."""
    return job.flops_per_param * arch.params * job.tokens / (gpu.bf16_tflops * 1e12 * TRAIN_MFU * job.gpus)


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


ESTIMATE, MEASURED, UNMEASURED = "estimate (model)", "measured", "unmeasured"


@dataclass
class PlanRow:
    run: str
    rule: str
    task: str
    jobs: int = 0
    passes: int = 0            # forward passes (decoding) or 0 (training)
    tokens: float = 0.0        # training tokens
    hours: float = 0.0         # device hours (GPU-hours: wall x GPUs) of the timed jobs
    measured: int = 0          # jobs timed from a measured figure
    approx: bool = False       # some measured job used static-k1's rate for another setting
    estimated: int = 0         # jobs timed by the model
    unmeasured: int = 0        # jobs with neither (CPU work without a figure; an unknown architecture)

    @property
    def basis(self) -> str:
        kinds = [k for k, n in ((MEASURED + ("~" if self.approx else ""), self.measured),
                                (ESTIMATE, self.estimated), (UNMEASURED, self.unmeasured)) if n]
        return " + ".join(kinds) if len(kinds) > 1 else (kinds[0] if kinds else UNMEASURED)

    def add(self, other: PlanRow) -> None:
        for f in ("jobs", "passes", "tokens", "hours", "measured", "estimated", "unmeasured"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.approx |= other.approx


def plan(runs: dict[str, tuple[object, bool]], figures: list[SpeedFigure], *, device: str = CPU,
         bench_dir: str | Path = "results/bench", results: str | Path = "results") -> list[PlanRow]:
    """One row per run x rule x task. ``runs``: run -> (resolved config, imported?); ``device``:
    "cpu" or a GPU (a key of :data:`GPUS`, or a measured folder's name under ``bench_dir/gpu``)."""
    spec = GPUS.get(gpu_key(device) or "") if device != CPU else None
    rows: dict[tuple[str, str, str], PlanRow] = {}

    def row(run, rule, task) -> PlanRow:
        return rows.setdefault((run, rule, task), PlanRow(run, rule, task))

    for run, (cfg, imported) in runs.items():
        arch = run_arch(cfg, run, results)
        if not imported:
            tj = train_job(cfg, run)
            r = row(run, tj.rule, tj.task)
            r.jobs += 1
            r.tokens += tj.tokens
            seq = measured_train_seconds(bench_dir, device, arch) if device != CPU else None
            if seq is not None:
                r.hours += tj.steps * tj.global_batch * seq[0] / 3600
                r.measured += 1
            elif spec is not None and arch is not None:
                r.hours += train_seconds(tj, arch, spec) * tj.gpus / 3600
                r.estimated += 1
            else:
                r.unmeasured += 1
        for job in run_jobs(cfg, run, imported=imported, device=device):
            r = row(run, job.rule, job.task)
            r.jobs += 1
            r.passes += job.passes
            fig, exact = find_figure(figures, cfg.model.name, run, job.dtype, job.batch_size, job.setting)
            if fig is not None:
                r.hours += job.passes / fig.passes_per_s / 3600
                r.measured += 1
                r.approx |= not exact
            elif spec is not None and arch is not None:
                r.hours += decode_seconds(job, arch, spec) / 3600
                r.estimated += 1
            else:
                r.unmeasured += 1
    return list(rows.values())


def collapse_tasks(rows: list[PlanRow]) -> list[PlanRow]:
    """One row per run and rule (its tasks summed): the compact table of a large config."""
    merged: dict[tuple[str, str], PlanRow] = {}
    for r in rows:
        m = merged.setdefault((r.run, r.rule), PlanRow(r.run, r.rule, r.task))
        if m.jobs and m.task != r.task:
            m.task = f"{sum(1 for x in rows if (x.run, x.rule) == (r.run, r.rule))} tasks"
        m.add(r)
    return list(merged.values())


def collapse_rules(rows: list[PlanRow]) -> list[PlanRow]:
    """Two rows per run, its training and its decoding work (every decoding rule summed): the
    table of a config with many runs (the ablations)."""
    merged: dict[tuple[str, str], PlanRow] = {}
    for r in rows:
        rule = r.rule if r.rule == "train_mtp" else "decoding"
        m = merged.setdefault((r.run, rule), PlanRow(r.run, rule, r.task))
        if m.jobs and m.task != r.task:
            m.task = "all"
        m.add(r)
    return list(merged.values())


MAX_ROWS = 20


def _hours(h: float) -> str:
    return f"{h:.2f}" if h < 10 else f"{h:,.1f}"


def _work(r: PlanRow) -> str:
    if r.rule == "train_mtp":
        return f"{r.tokens / 1e9:,.2f}B tokens"
    return f"{r.passes:,} passes"


def render(rows: list[PlanRow], *, device: str, figures: list[SpeedFigure] | None = None,
           by_task: bool = False, notes: tuple[str, ...] = ()) -> str:
    """The plan as one Markdown table (per run, rule and task; per run and rule, else per run's
    training and decoding, when there are more than :data:`MAX_ROWS` rows, unless ``by_task``),
    its total and the model's assumptions in a few lines."""
    spec = GPUS.get(gpu_key(device) or "") if device != CPU else None
    if device == CPU:
        title = "CPU plan (figures measured on CPUs; CPU hours do not transfer to a GPU)"
        unit = "CPU-hours"
    else:
        title = f"GPU plan for {spec.name if spec else device}"
        unit = "GPU-hours"
    shown = rows if by_task or len(rows) <= MAX_ROWS else collapse_tasks(rows)
    if not by_task and len(shown) > MAX_ROWS:
        shown = collapse_rules(rows)
    lines = [f"# {title}", "", f"| run | rule | task | jobs | work | {unit} | basis |", "|---|---|---|---|---|---|---|"]
    for r in shown:
        hours = _hours(r.hours) if r.measured or r.estimated else "-"
        if r.unmeasured and (r.measured or r.estimated):
            hours += f" (+{r.unmeasured} jobs)"
        lines.append(f"| {r.run} | {r.rule} | {r.task} | {r.jobs} | {_work(r)} | {hours} | {r.basis} |")
    total = PlanRow("total", "", "")
    for r in rows:
        total.add(r)
    gpu_rules = sorted({r.rule for r in rows})
    lines.append(f"| **total** | {len(gpu_rules)} rules | | {total.jobs} | {total.passes:,} passes | "
                 f"**{_hours(total.hours)}** | {total.basis} |")
    lines.append("")
    if spec is not None:
        lines += [f"Estimate (model): a pass takes max(bytes / ({spec.bandwidth_tb_s:g} TB/s x {MEMORY_EFFICIENCY:g}), "
                  f"FLOPs / (peak x {COMPUTE_EFFICIENCY:g})), bytes = weights + KV cache read, peak "
                  f"{spec.fp32_tflops:g} TFLOP/s float32, {spec.bf16_tflops:g} bf16;",
                  "  every document runs its full budget (upper bound), ConfAdapt at the paper's effective k, "
                  "each batch prefills its prompts;",
                  f"  training: (6 + 2 teacher [+ 2 recompute]) x params x tokens at {TRAIN_MFU:g} of the bf16 peak "
                  "per GPU. Efficiencies assumed: mtpsd.evaluation.plan."]
    elif device == CPU:
        lines.append("Hours only from measured CPU figures (mtpsd/measured_speed.json, results/bench/*.json); "
                     "`mtpsd plan --gpu h100|h200|a100` estimates a GPU.")
    else:
        lines.append(f"No time model for {device} (known: {', '.join(GPUS)}): only its measured figures count.")
    if figures:
        kinds = sorted({(f.model, f.dtype, f.batch_size) for f in figures})
        lines.append("Measured figures: " + ", ".join(f"{m} {d} batch {b}" for m, d, b in kinds) + ".")
    lines += list(notes)
    return "\n".join(lines) + "\n"


def plan_device(runs: dict[str, tuple[object, bool]], *, requested: str | None = None,
                gpu_names: tuple[str, ...] = (), bench_dir: str | Path = "results/bench") -> tuple[str, str]:
    """(device, why) the plan is for: ``requested`` (``--gpu`` / ``MTPSD_GPU``), else the GPU
    found here, else the CPU where measured CPU figures time every job (the tiny and SmolLM2
    profiles), else an H100 (the paper's models)."""
    if requested:
        if requested != CPU and gpu_key(requested) is None and not gpu_dirs(bench_dir, requested):
            raise MtpsdError(f"GPU {requested!r}: no time model (known: {', '.join(GPUS)}) and no measured "
                             f"figures under {Path(bench_dir) / 'gpu'}/")
        return requested, "requested"
    if gpu_names and gpu_key(gpu_names[0]) is not None:
        return gpu_key(gpu_names[0]), f"found here: {gpu_names[0]}"
    if not gpu_names:
        figures = collect_figures(bench_dir)
        cpu_rows = plan(runs, figures, device=CPU, bench_dir=bench_dir)
        if all(r.unmeasured == 0 for r in cpu_rows if r.rule != "train_mtp"):
            return CPU, "CPU figures cover the work"
    here = f"{gpu_names[0]} here has no time model" if gpu_names else "no GPU here"
    return "h100", f"{here}; MTPSD_GPU=h200|a100 or `mtpsd plan --gpu` for another"


def plan_text(runs: dict[str, tuple[object, bool]], *, requested: str | None = None,
              gpu_names: tuple[str, ...] = (), bench_dir: str | Path = "results/bench",
              by_task: bool = False, notes: tuple[str, ...] = ()) -> str:
    """The whole plan as printed by ``mtpsd plan`` and by Snakemake at start."""
    device, why = plan_device(runs, requested=requested, gpu_names=gpu_names, bench_dir=bench_dir)
    figures = collect_figures(bench_dir, gpu=None if device == CPU else device)
    rows = plan(runs, figures, device=device, bench_dir=bench_dir)
    text = render(rows, device=device, figures=figures, by_task=by_task, notes=notes)
    return text.replace("\n\n", f" ({why})\n\n", 1) if device != CPU else text
