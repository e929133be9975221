"""Expected peak memory of one evaluation, and the batch each task runs at (no weights loaded).

An evaluation decodes through ``mtpsd.decoding.engine.DecodeEngine``; its memory is known
from the model config, the eval dtype and the task. :func:`plan_eval_memory` adds up, in bytes:

- weights: ``P b`` (``b`` bytes per value of ``eval.dtype``; the paper's float32: 4);
- the KV cache, as the engine allocates it (``kv_cache.RowCache``): per layer keys and values
  of shape ``(rows, kv_heads, slots + 1, head_dim)`` in the model dtype, where ``rows`` is
  the batch rounded up to a power of two and ``slots`` = longest prompt + generation budget
  + ``2k``, rounded up to a multiple of ``engine.SLOT_ROUND`` (256); the whole cache is
  allocated before the first pass, for every row at the longest prompt and the full budget;
- one pass's working set, the largest of the engine's three kinds of pass, each bounded by
  ``engine.pass_bytes`` (4D mask, attention scores as the math kernel would hold them, one
  layer's activations, read-out logits over the vocabulary): prefill (only for prompts
  longer than ``prefill_chunk``: ``prefill_chunk`` columns, read-out 1), the first decode
  pass (the prompt's last ``min(prompt, prefill_chunk)`` tokens and ``k - 1`` masks, read-out
  ``k``) and later decode passes (width and read-out at most ``2k - 1``, attending the whole
  cache);
- on CUDA, the training plan's stated overhead (``training.memory_plan``): 1 GiB CUDA
  context and 10% allocator fragmentation on top of the allocated peak.

:func:`choose_batch` takes the largest power of two, at most :data:`MAX_EVAL_BATCH` and at
most the task's documents, whose peak fits the memory given; :func:`check_eval_fits` refuses
(before a weight is loaded) when even batch 1 does not, naming what would fit.

The longest prompt: at evaluation time it is measured (``MTPLM`` tokenizes every request
before decoding and re-plans with it). Before that (``mtpsd plan-memory``, the check before
loading) it is :data:`PROMPT_TOKENS` where measured, else :data:`PROMPT_ALLOWANCE`, an
allowance stated as such; the plan also prints the longest prompt each chosen batch holds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

from mtpsd.decoding.sizes import KV_BUCKET, PREFILL_CHUNK, SLOT_ROUND, pass_bytes
from mtpsd.errors import MtpsdError
from mtpsd.training.memory_plan import CUDA_CONTEXT_BYTES, FRAGMENTATION, GiB, MemoryPlan, fmt_bytes

# the largest batch a task gets: the largest batch benchmarks/gpu_check.sh measures the engine at
MAX_EVAL_BATCH = 64
# Longest prompt in tokens, measured: the 1,319 GSM8K test prompts (8-shot CoT, "Let's think
# step by step", multi-turn chat template) built by lm-eval from data/gsm8k/test.jsonl and
# tokenized by SmolLM2-135M-Instruct's tokenizer (49k vocabulary, ChatML with its default
# system prompt; the Llama 3 and Qwen3 tokenizers were not available offline, and their larger
# vocabularies are expected, not measured, to need fewer tokens; the evaluation itself counts
# the real ones): tests/test_eval_memory_plan.py re-measures it.
PROMPT_TOKENS: dict[str, int] = {"mtpsd_gsm8k_cot": 1090}
# Every other task before its prompts are seen: an allowance, not a measurement (their data is
# on the hub only). The evaluation re-plans with the real longest prompt; `--prompt-tokens`
# changes the allowance.
PROMPT_ALLOWANCE = 4096
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}


@dataclass(frozen=True)
class EvalShape:
    """What the evaluation plan needs to know about an architecture."""

    name: str
    params: int  # P (tied weights once)
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int


@functools.lru_cache(maxsize=8)
def model_shape(source: str | Path):
    """``training.memory_plan.model_shape``, built once per source."""
    from mtpsd.training.memory_plan import model_shape as build

    return build(source)


@functools.lru_cache(maxsize=8)
def eval_shape(source: str | Path) -> EvalShape:
    """The sizes of the model a checkpoint directory, config JSON or hub id describes (its
    config only; parameters counted on the meta device)."""
    from mtpsd.training.memory_plan import _read_config

    src = Path(str(source))
    cfg = _read_config(source)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return _shape_of_values(cfg.to_dict(), src.stem if src.suffix == ".json" else src.name,
                            model_shape(source).params)


def _shape_of_values(d: dict, name: str, params: int) -> EvalShape:
    """:class:`EvalShape` from ``config.json`` values and a parameter count."""
    heads = int(d["num_attention_heads"])
    return EvalShape(name=name, params=params, layers=int(d["num_hidden_layers"]), hidden=int(d["hidden_size"]),
                     intermediate=int(d["intermediate_size"]), heads=heads,
                     kv_heads=int(d.get("num_key_value_heads") or heads),
                     head_dim=int(d.get("head_dim") or int(d["hidden_size"]) // heads), vocab=int(d["vocab_size"]))


@dataclass(frozen=True)
class EvalSetup:
    """One evaluation job's memory-relevant facts."""

    task: str
    budget: int  # generation budget (max_gen_toks)
    prompt_tokens: int  # longest prompt
    k: int  # the largest k a setting of the job uses (ConfAdapt: k_max)
    batch: int = 1
    dtype: str = "float32"
    device: str = "cuda"
    documents: int | None = None  # caps the batch
    prefill_chunk: int = PREFILL_CHUNK
    prompt_source: str = "measured"  # "measured" | "allowance"

    @property
    def rows(self) -> int:
        """Cache rows: the batch rounded up to a power of two (``engine_for``, ``_reserve``)."""
        return 1 << max(self.batch - 1, 0).bit_length()

    @property
    def slots(self) -> int:
        """Cache slots per row: prompt + budget + 2k, rounded up to ``SLOT_ROUND``."""
        return _round_up(self.prompt_tokens + self.budget + 2 * self.k, SLOT_ROUND)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


class EvalMemoryPlan(MemoryPlan):
    """The training plan's container (``parts`` allocated bytes, ``overhead``, ``peak``,
    ``fits``, ``summary``) holding an :class:`EvalShape` and an :class:`EvalSetup`."""

    def table(self) -> str:
        return f"{self.shape.name} on {self.setup.task}, batch {self.setup.batch}: {self.summary()}"


def kv_cache_bytes(m: EvalShape, s: EvalSetup) -> int:
    """``RowCache``: layers x (keys, values) x (rows, kv_heads, slots + 1, head_dim) x bytes."""
    return m.layers * 2 * s.rows * m.kv_heads * (s.slots + 1) * m.head_dim * _BYTES[s.dtype]


def pass_working_set(m: EvalShape, s: EvalSetup) -> tuple[str, int]:
    """(kind, bytes) of the largest pass: prefill, first decode pass or later decode pass."""
    dims = dict(heads=m.heads, kv_heads=m.kv_heads, hidden=m.hidden, intermediate=m.intermediate, vocab=m.vocab,
                dtype_bytes=_BYTES[s.dtype])
    P, C, k, B = s.prompt_tokens, s.prefill_chunk, s.k, s.rows
    kinds = {
        "first pass": pass_bytes(batch=B, width=min(P, C) + k - 1, kv=min(_round_up(P + k - 1, KV_BUCKET), s.slots),
                                 read=k, **dims),
        "decode pass": pass_bytes(batch=B, width=2 * k - 1, kv=s.slots, read=2 * k - 1, **dims),
    }
    if P > C:
        kinds["prefill pass"] = pass_bytes(batch=B, width=C, kv=min(_round_up(P - C, KV_BUCKET), s.slots), read=1,
                                           **dims)
    kind = max(kinds, key=kinds.get)
    return kind, kinds[kind]


def plan_eval_memory(m: EvalShape, s: EvalSetup) -> EvalMemoryPlan:
    """The expected peak of one evaluation (module docstring: every term)."""
    if s.dtype not in _BYTES:
        raise MtpsdError(f"eval dtype {s.dtype!r}: the plan knows {', '.join(_BYTES)}")
    kind, work = pass_working_set(m, s)
    parts = {"weights": float(m.params * _BYTES[s.dtype]), "KV cache": float(kv_cache_bytes(m, s)),
             f"one pass ({kind})": float(work)}
    plan = EvalMemoryPlan(m, s, parts)
    if s.device == "cuda":
        plan.overhead = CUDA_CONTEXT_BYTES + FRAGMENTATION * plan.allocated
    return plan


def batch_cap(s: EvalSetup) -> int:
    """The largest batch worth trying: :data:`MAX_EVAL_BATCH`, or the documents rounded up to a
    power of two (a larger batch only pads)."""
    docs = s.documents if s.documents is not None else MAX_EVAL_BATCH
    return min(MAX_EVAL_BATCH, 1 << max(docs - 1, 0).bit_length())


def choose_batch(m: EvalShape, s: EvalSetup, memory_bytes: float) -> EvalMemoryPlan | None:
    """The plan at the largest power-of-two batch (<= :func:`batch_cap`) that fits, else None."""
    b = batch_cap(s)
    while b >= 1:
        plan = plan_eval_memory(m, replace(s, batch=b))
        if plan.fits(memory_bytes):
            return plan
        b //= 2
    return None


def longest_prompt_that_fits(m: EvalShape, s: EvalSetup, memory_bytes: float) -> int:
    """The longest prompt (tokens) for which ``s`` (its batch) still fits; 0 if none does."""
    def ok(p: int) -> bool:
        return plan_eval_memory(m, replace(s, prompt_tokens=p)).fits(memory_bytes)

    if not ok(1):
        return 0
    lo, hi = 1, 1 << 20
    if ok(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def largest_budget_that_fits(m: EvalShape, s: EvalSetup, memory_bytes: float) -> int:
    """The largest generation budget that fits at batch 1 (0: none)."""
    def ok(n: int) -> bool:
        return plan_eval_memory(m, replace(s, batch=1, budget=n)).fits(memory_bytes)

    if not ok(1):
        return 0
    lo, hi = 1, max(2, s.budget)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def check_eval_fits(m: EvalShape, s: EvalSetup, memory_bytes: float) -> EvalMemoryPlan:
    """The plan at the chosen batch, or an MtpsdError naming what would fit when even batch 1
    does not (before any weight is loaded)."""
    plan = choose_batch(m, s, memory_bytes)
    if plan is not None:
        return plan
    one = plan_eval_memory(m, replace(s, batch=1))
    dev = "GPU" if s.device == "cuda" else "device"
    ways = []
    if _BYTES[s.dtype] > 2:
        half = plan_eval_memory(m, replace(s, batch=1, dtype="bfloat16"))
        if half.fits(memory_bytes):
            ways.append(f"eval.dtype: bfloat16 (-> {fmt_bytes(half.peak)}; the paper evaluated in float32)")
    budget = largest_budget_that_fits(m, s, memory_bytes)
    if budget >= 1:
        ways.append(f"eval.max_gen_toks: {{{s.task}: {budget}}} (the largest budget that fits at batch 1; "
                    f"the task's is {s.budget})")
    ways.append(f"a {dev} with at least {fmt_bytes(one.peak)}")
    raise MtpsdError(
        f"{m.name} on {s.task} does not fit even at batch 1: the evaluation memory plan needs {fmt_bytes(one.peak)} "
        f"({one.summary()}; prompt {s.prompt_tokens} + budget {s.budget} + 2k {2 * s.k} tokens per cache row, "
        f"{s.dtype}) and the {dev} has {fmt_bytes(memory_bytes)}. What would fit: " + " | ".join(ways)
        + " (`mtpsd plan-memory --eval` prints the plan)")


# ---- from a config ---------------------------------------------------------------------

# Architectures of the paper's base models (their published MTP checkpoints share them) for
# plans made before anything is downloaded: config.json copies in the repository's
# benchmarks/arch/ (the GPU check builds its random-weight models from the same files).
REPO_ARCH_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "arch"
KNOWN_ARCHS = {"Magpie-Align/Llama-3.1-8B-Magpie-Align-SFT-v0.1": "llama31_8b.json",
               "Qwen/Qwen3-4B-Instruct-2507": "qwen3_4b.json"}


def arch_source(cfg) -> str | None:
    """Where a run's architecture can be read without a download: a local model directory or
    config JSON, else :data:`KNOWN_ARCHS` in ``benchmarks/arch/``, else the hub id (read from
    the local HF cache only when it is there); None for a from-scratch model."""
    src = cfg.model.pretrained
    if src is None:
        return None
    path = Path(str(src))
    if (path / "config.json").is_file() or (path.suffix == ".json" and path.is_file()):
        return str(path)
    if src in KNOWN_ARCHS and (REPO_ARCH_DIR / KNOWN_ARCHS[src]).is_file():
        return str(REPO_ARCH_DIR / KNOWN_ARCHS[src])
    return str(src)


def shape_of_dict(d: dict, name: str) -> EvalShape | None:
    """:class:`EvalShape` from ``config.json`` values without torch (the dry run prints the
    plan while Snakemake parses the workflow): Llama and Qwen3 decoders, whose parameter count
    ``mtpsd.evaluation.plan.arch_of_config`` gives (tests check it against a meta-device
    model); None for other architectures."""
    from mtpsd.evaluation.plan import arch_of_config

    if d.get("model_type") not in ("llama", "qwen3"):
        return None
    return _shape_of_values(d, name, arch_of_config(d, name).params)


def known_config(cfg) -> tuple[dict, str] | None:
    """A run's ``config.json`` values and name, read without torch or the hub: a local
    checkpoint directory or config JSON, else the plan's table of known configs
    (``mtpsd.evaluation.plan.KNOWN_CONFIGS``; the published checkpoint before its base model);
    None when neither has it."""
    import json

    from mtpsd.evaluation.plan import KNOWN_CONFIGS

    for source in (getattr(cfg, "checkpoint", None), cfg.model.pretrained):
        if source is None:
            continue
        path = Path(str(source))
        f = path / "config.json" if path.is_dir() else path
        if f.suffix == ".json" and f.is_file():
            try:
                return json.loads(f.read_text(encoding="utf-8")), path.stem
            except (OSError, ValueError):
                return None
        if source in KNOWN_CONFIGS:
            return dict(KNOWN_CONFIGS[source]), path.name
    return None


def _known_shape(cfg) -> EvalShape | None:
    known = known_config(cfg)
    if known is None:
        return None
    try:
        return shape_of_dict(*known)
    except (KeyError, ValueError, TypeError):
        return None


def run_eval_shape(cfg) -> EvalShape | None:
    """A run's :class:`EvalShape`: from :func:`known_config` without torch where it can, else
    from its config on disk or in the hub cache (:func:`arch_source`); None for a model
    trained from scratch. Raises MtpsdError when the config cannot be read."""
    shape = _known_shape(cfg)
    if shape is not None:
        return shape
    src = arch_source(cfg)
    return None if src is None else eval_shape(src)


def run_model_shape(cfg):
    """A run's ``training.memory_plan.ModelShape`` (meta device), from :func:`known_config`
    without the hub where it can, else from :func:`arch_source`; None for a model trained
    from scratch. Raises MtpsdError when the config cannot be read."""
    import json

    known = known_config(cfg)
    if known is not None:
        return _known_model_shape(json.dumps(known[0], sort_keys=True), known[1])
    src = arch_source(cfg)
    return None if src is None else model_shape(src)


@functools.lru_cache(maxsize=8)
def _known_model_shape(config_json: str, name: str):
    """``training.memory_plan.shape_of_config`` of known config values, built once per config
    (the meta-device model is the slow part; the doctor asks for it per check)."""
    import json

    from transformers import AutoConfig

    from mtpsd.training.memory_plan import shape_of_config

    return shape_of_config(AutoConfig.for_model(**json.loads(config_json)), name)


def dry_run_batches(cfg, memory_bytes: float, *, device: str = "cuda") -> dict[str, int] | None:
    """task -> planned batch of a run (``eval.batch_size: null``) for ``memory_bytes``, before
    any data or weights exist; None when the architecture cannot be read offline. A task
    that does not fit at batch 1 gets 1 (its evaluation refuses with the reason)."""
    try:
        shape = run_eval_shape(cfg)
    except (MtpsdError, OSError, ValueError):
        return None
    if shape is None:
        return None
    return {tp.setup.task: tp.batch or 1 for tp in plan_tasks(shape, task_setups(cfg, device=device), memory_bytes)}


def largest_k(cfg, task: str | None = None) -> int:
    """The largest k any evaluation setting of the config uses (ConfAdapt: ``decode.k_max``)."""
    from mtpsd.evaluation.plan import final_settings
    from mtpsd.settings import parse_setting

    settings = set(final_settings(cfg)) | set(cfg.eval.checkpoint_settings) | {"static-k1"}
    return max(parse_setting(s, k_max=cfg.decode.k_max)[1] for s in settings)


def task_setups(cfg, *, device: str = "cuda", prompt_tokens: int | None = None,
                dtype: str | None = None) -> list[EvalSetup]:
    """One :class:`EvalSetup` per task of ``cfg.eval.tasks`` (a resolved config): its budget,
    documents (capped by ``eval.limit``), the largest k of the sweep, the eval dtype and the
    longest prompt (``prompt_tokens``, else :data:`PROMPT_TOKENS`, else the allowance)."""
    from mtpsd.evaluation.plan import task_documents
    from mtpsd.evaluation.tasks import generation_budget

    dt = dtype or cfg.eval.dtype or cfg.model.dtype
    if dt == "auto":
        dt = "bfloat16" if device == "cuda" else "float32"
    k = largest_k(cfg)
    out = []
    for task in cfg.eval.tasks:
        docs = task_documents(cfg, task)
        if cfg.eval.limit is not None:
            docs = min(docs, cfg.eval.limit)
        if prompt_tokens is not None:
            p, src = prompt_tokens, "given"
        elif task in PROMPT_TOKENS:
            p, src = PROMPT_TOKENS[task], "measured"
        else:
            p, src = PROMPT_ALLOWANCE, "allowance"
        out.append(EvalSetup(task=task, budget=generation_budget(task, overrides=cfg.eval.max_gen_toks,
                                                                 default=cfg.decode.max_new_tokens),
                             prompt_tokens=p, k=k, dtype=dt, device=device, documents=docs, prompt_source=src))
    return out


@dataclass
class TaskPlan:
    setup: EvalSetup
    plan: EvalMemoryPlan | None  # None: even batch 1 does not fit
    longest_prompt: int  # the longest prompt the chosen batch holds
    error: str | None = None

    @property
    def batch(self) -> int | None:
        return None if self.plan is None else self.plan.setup.batch


def plan_tasks(m: EvalShape, setups: list[EvalSetup], memory_bytes: float) -> list[TaskPlan]:
    """Each task's batch and peak (or the reason it does not fit) for ``memory_bytes``."""
    out = []
    for s in setups:
        try:
            p = check_eval_fits(m, s, memory_bytes)
        except MtpsdError as e:
            out.append(TaskPlan(s, None, 0, str(e)))
            continue
        out.append(TaskPlan(s, p, longest_prompt_that_fits(m, p.setup, memory_bytes)))
    return out


def render_tasks(m: EvalShape, plans: list[TaskPlan], memory_bytes: float) -> str:
    """The per-task table ``mtpsd plan-memory --eval`` prints."""
    dev = plans[0].setup.device if plans else "cuda"
    lines = [f"evaluation of {m.name} ({m.params / 1e9:.2f}B parameters) on {'a GPU' if dev == 'cuda' else 'CPU'} "
             f"with {memory_bytes / GiB:.1f} GiB, {plans[0].setup.dtype if plans else ''}:",
             f"  {'task':<24} {'budget':>6} {'prompt':>17} {'batch':>5} {'weights':>8} {'KV cache':>9} "
             f"{'pass':>8} {'overhead':>8} {'peak':>9}  longest prompt at this batch"]
    for tp in plans:
        s = tp.setup
        prompt = f"{s.prompt_tokens:,} {s.prompt_source}"
        if tp.plan is None:
            lines.append(f"  {s.task:<24} {s.budget:>6} {prompt:>17} {'-':>5}  does not fit at batch 1")
            continue
        p = tp.plan
        work = next(v for k, v in p.parts.items() if k.startswith("one pass"))
        lines.append(f"  {s.task:<24} {s.budget:>6} {prompt:>17} {p.setup.batch:>5} "
                     f"{p.parts['weights'] / GiB:>8.1f} {p.parts['KV cache'] / GiB:>9.1f} {work / GiB:>8.1f} "
                     f"{p.overhead / GiB:>8.1f} {p.peak / GiB:>9.1f}  {tp.longest_prompt:,}")
    lines.append("  (GiB; prompt: longest prompt in tokens, measured or an allowance; the evaluation re-plans "
                 "with its real prompts)")
    lines += [f"  {tp.setup.task}: {tp.error}" for tp in plans if tp.error]
    return "\n".join(lines)


def plans_json(m: EvalShape, plans: list[TaskPlan], memory_bytes: float) -> dict:
    return {"model": m.__dict__, "memory_bytes": memory_bytes, "tasks": [
        {"task": tp.setup.task, "budget": tp.setup.budget, "prompt_tokens": tp.setup.prompt_tokens,
         "prompt_source": tp.setup.prompt_source, "k": tp.setup.k, "dtype": tp.setup.dtype,
         "documents": tp.setup.documents, "batch": tp.batch,
         "parts_bytes": tp.plan.parts if tp.plan else None, "overhead_bytes": tp.plan.overhead if tp.plan else None,
         "peak_bytes": tp.plan.peak if tp.plan else None, "longest_prompt_at_batch": tp.longest_prompt,
         "error": tp.error} for tp in plans]}


# ---- at evaluation time ------------------------------------------------------------------


def device_memory_bytes(device) -> float | None:
    """Memory an evaluation may use on ``device``: CUDA free + what this process already
    reserved; CPU: ``MemAvailable`` (Linux), else None (unknown)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device))
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    return float(kib * 1024)


def evaluation_batch(checkpoint: str | Path, task: str, *, budget: int, k: int, dtype: str,
                     documents: int | None = None, device=None, memory_bytes: float | None = None):
    """``mtpsd evaluate`` with ``eval.batch_size: null``, before a weight is loaded: the batch for
    ``task`` from the checkpoint's config and the device's memory (the task's measured prompt
    length or the allowance), and a re-planner ``(longest prompt, budget) -> batch`` that
    ``MTPLM`` calls with the real requests. Raises (naming what would fit) when batch 1 does not
    fit. Returns ``(1, None)`` where the memory is unknown."""
    from mtpsd.checkpoint import resolve_device

    dev = resolve_device(device)
    memory = device_memory_bytes(dev) if memory_bytes is None else memory_bytes
    if memory is None:
        return 1, None
    dt = dtype if dtype != "auto" else ("bfloat16" if dev.type == "cuda" else "float32")  # checkpoint.resolve_dtype
    shape = eval_shape(checkpoint)
    setup = EvalSetup(task=task, budget=budget, prompt_tokens=PROMPT_TOKENS.get(task, PROMPT_ALLOWANCE), k=k,
                      dtype=dt, device=dev.type, documents=documents,
                      prompt_source="measured" if task in PROMPT_TOKENS else "allowance")
    first = check_eval_fits(shape, setup, memory)

    def replan(longest_prompt: int, task_budget: int) -> int:
        return check_eval_fits(shape, replace(setup, prompt_tokens=int(longest_prompt), budget=int(task_budget),
                                              prompt_source="measured"), memory).setup.batch

    return first.setup.batch, replan


def measure_longest_prompt(task: str, tokenizer, *, data_file: str | Path | None = None,
                           chat_template: bool = True, limit: int | None = None) -> int:
    """The longest prompt of one of our tasks in ``tokenizer``'s tokens, built as lm-eval
    builds it inside ``mtpsd evaluate`` (few-shot as multi-turn chat when the template is on)."""
    from mtpsd.evaluation.tasks import task_config, task_manager

    task_obj = task_manager().load([task_config(task, data_file)])["tasks"][task]

    def template(history, add_generation_prompt=True):  # as lm-eval's HFLM.apply_chat_template
        return tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             continue_final_message=not add_generation_prompt)

    task_obj.build_all_requests(limit=limit, apply_chat_template=chat_template, fewshot_as_multiturn=chat_template,
                                chat_template=template if chat_template else None, tokenizer_name="measure")
    # + 1: lm-eval may add the tokenizer's BOS when it encodes a prompt that does not start with it
    return 1 + max(len(tokenizer(inst.args[0], add_special_tokens=False)["input_ids"]) for inst in task_obj.instances)
