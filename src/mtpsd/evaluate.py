"""One evaluation: one checkpoint x one lm-eval task x one decoding setting (method.md s. 7).

The model is wrapped in ``mtpsd.lm_eval_adapter.MTPLM`` so every generation goes
through our decoder (static k, ConfAdapt, verify); lm-eval builds the prompts,
applies the task filters and metrics. The result JSON is lm-eval's result dict
(``results``, ``configs``, ``versions``, ``n-samples``, ``samples`` ...) plus
``decode_stats`` (effective k = tokens / forward passes, method.md s. 6),
``setting``/``strategy``/``param`` and ``provenance``::

    from mtpsd.evaluate import evaluate
    out = evaluate(cfg, "results/runs/tiny/checkpoint", "mtpsd_synth_math", "confadapt-tau0.9")
    out["results"]["mtpsd_synth_math"]["exact_match,flexible-extract"]

Task data: every task YAML in ``mtpsd/eval_tasks`` names its hub dataset (or, for
``mtpsd_synth_math``, our generated test file). ``data_file=`` (``--data``) points a
task at a local JSONL instead: :func:`task_config` loads the shipped YAML and swaps
in ``dataset_path: json`` with ``data_files: {test: FILE}``; everything else
(prompt, few-shot, filters, metrics) stays the same.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from mtpsd.errors import MtpsdError

TASKS_DIR = Path(__file__).resolve().parent / "eval_tasks"
# Fields a local JSONL must have for each task (hub datasets are validated by lm-eval).
LOCAL_FIELDS: dict[str, tuple[str, ...]] = {
    "mtpsd_synth_math": ("question", "answer"),
    "mtpsd_gsm8k_cot": ("question", "answer"),
    "mtpsd_cnn_dailymail": ("article", "highlights"),
    "mtpsd_creative_writing": ("prompt",),
}
CREATIVE_TASK = "mtpsd_creative_writing"


def known_tasks() -> list[str]:
    return sorted(p.stem for p in TASKS_DIR.glob("mtpsd_*.yaml"))


def task_manager():
    """An lm-eval ``TaskManager`` that indexes only our task YAMLs (fast, offline)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


def check_local_file(task: str, data_file: str | Path) -> Path:
    """The absolute path of a local task file after checking its rows have the task's fields."""
    from mtpsd.io import read_jsonl

    path = Path(data_file).resolve()
    rows = read_jsonl(path, required=LOCAL_FIELDS.get(task, ()))
    if not rows:
        raise MtpsdError(f"{path}: no rows for task {task}")
    return path


def task_config(task: str, data_file: str | Path | None = None, *,
                max_gen_toks: int | None = None) -> dict[str, Any]:
    """The task's lm-eval config dict (functions resolved), on a local JSONL if given.

    ``max_gen_toks`` caps the task's own generation budget (the config's
    ``decode.max_new_tokens``: one knob for every task).
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    path = TASKS_DIR / f"{task}.yaml"
    if not path.is_file():
        raise MtpsdError(f"unknown task {task!r}; known: {', '.join(known_tasks())}")
    cfg = dict(load_yaml(path, resolve_func=True))
    if data_file is not None:
        local = check_local_file(task, data_file)
        for key in ("dataset_name", "training_split", "validation_split", "fewshot_split"):
            cfg.pop(key, None)
        cfg.update(dataset_path="json", dataset_kwargs={"data_files": {"test": str(local)}},
                   test_split="test")
    if max_gen_toks is not None:
        gen = dict(cfg.get("generation_kwargs") or {})
        gen["max_gen_toks"] = min(int(gen.get("max_gen_toks", max_gen_toks)), int(max_gen_toks))
        cfg["generation_kwargs"] = gen
    if data_file is None and cfg.get("dataset_path") == "json":  # shipped default local file (synth math)
        default = cfg["dataset_kwargs"]["data_files"]["test"]
        if not Path(default).is_file():
            raise MtpsdError(f"{default}: data file of task {task} not found (run from the repository "
                             "root after prepare_data, or pass --data FILE)")
    return cfg


def checkpoint_label(path: str | Path) -> str:
    """"step0" for ``mtp_init``, "final" for ``checkpoint``, "step{N}" for ``step_{N:06d}``."""
    name = Path(path).name
    if name == "mtp_init":
        return "step0"
    if name == "checkpoint":
        return "final"
    m = re.fullmatch(r"step_(\d+)", name)
    return f"step{int(m.group(1))}" if m else name


def _make_lm(model, tokenizer, strategy: str, k: int, tau: float, *, batch_size: int,
             max_gen_toks: int):
    from mtpsd.lm_eval_adapter import MTPLM

    return MTPLM(pretrained=model, tokenizer=tokenizer, strategy=strategy, k=k, tau=tau,
                 batch_size=batch_size, max_gen_toks=max_gen_toks)


def _jsonable(obj: Any) -> Any:
    """lm-eval's dict holds numpy scalars and callables in ``configs``; make it plain JSON."""
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(obj, default=handle_non_serializable))


def _summarise_decode_stats(stats: dict) -> dict:
    """Keep decode stats small: per-pass chunk sizes become a histogram {size: count}."""
    out = dict(stats)
    chunks = out.pop("chunk_sizes", None)
    if chunks is not None:
        flat = [c for row in chunks for c in (row if isinstance(row, (list, tuple)) else [row])]
        hist: dict[str, int] = {}
        for c in flat:
            hist[str(int(c))] = hist.get(str(int(c)), 0) + 1
        out["chunk_size_hist"] = dict(sorted(hist.items(), key=lambda kv: int(kv[0])))
    return out


def story_samples(result: dict, task: str = CREATIVE_TASK) -> dict[int, tuple[str, str]]:
    """doc_id -> (prompt, generation) from logged samples (first filter only)."""
    out: dict[int, tuple[str, str]] = {}
    for s in result.get("samples", {}).get(task, []):
        if s["doc_id"] in out:
            continue
        prompt = s["arguments"][0][0]
        gen = s["filtered_resps"][0]
        out[int(s["doc_id"])] = (prompt, gen if isinstance(gen, str) else gen[0])
    return out


def add_story_metrics(result: dict, *, base=None, reference: dict | None = None,
                      task: str = CREATIVE_TASK) -> dict:
    """Post-process creative-writing samples (needs artefacts lm-eval does not see).

    ``base``: ``(model, tokenizer)`` of the frozen base model -> ``ppl_base`` (perplexity
    of each story given its prompt, mean and standard error over documents).
    ``reference``: the k=1 result dict of the same checkpoint -> ``rouge_l_vs_k1``
    (ROUGE-L F1 of each story against the k=1 story of the same document).
    Metrics go to ``result["results"][task]`` as ``"<name>,none"`` / ``"<name>_stderr,none"``.
    """
    from mtpsd.metrics import generation_perplexity, mean_se, rouge_l

    stories = story_samples(result, task)
    if not stories:
        raise MtpsdError(f"result has no logged samples for {task}; cannot add story metrics")
    res = result["results"][task]
    per_doc: dict[int, dict] = {d: {} for d in stories}
    if base is not None:
        model, tok = base
        ids = sorted(stories)
        ppl = generation_perplexity(model, tok, [stories[d][0] for d in ids], [stories[d][1] for d in ids])
        for d, p in zip(ids, ppl):
            per_doc[d]["ppl_base"] = p
        res["ppl_base,none"], res["ppl_base_stderr,none"] = mean_se(ppl)
    if reference is not None:
        ref = story_samples(reference, task)
        missing = sorted(set(stories) - set(ref))
        if missing:
            raise MtpsdError(f"k=1 reference lacks documents {missing[:5]} of {task}")
        scores = [rouge_l(stories[d][1], ref[d][1]) for d in sorted(stories)]
        for d, sc in zip(sorted(stories), scores):
            per_doc[d]["rouge_l_vs_k1"] = sc
        res["rouge_l_vs_k1,none"], res["rouge_l_vs_k1_stderr,none"] = mean_se(scores)
    for s in result["samples"][task]:
        s.update(per_doc.get(int(s["doc_id"]), {}))
    return result


def evaluate(cfg, checkpoint: str | Path, task: str, setting: str, *, data_file: str | Path | None = None,
             limit: int | None = None, base_model: str | Path | None = None,
             reference: str | Path | None = None) -> dict:
    """Run one task with one decoding setting on one checkpoint; return the result dict.

    ``limit`` defaults to ``cfg.eval.limit`` (documents, from the start of the test split).
    """
    import torch
    from lm_eval import simple_evaluate

    from mtpsd.checkpoint import load_checkpoint
    from mtpsd.io import provenance, read_json
    from mtpsd.settings import parse_setting

    strategy, k, tau = parse_setting(setting, k_max=cfg.decode.k_max)
    if task not in known_tasks():
        raise MtpsdError(f"unknown task {task!r}; known: {', '.join(known_tasks())}")
    if data_file is None:
        data_file = cfg.eval.data_files.get(task)
    limit = cfg.eval.limit if limit is None else limit
    spec = task_config(task, data_file, max_gen_toks=cfg.decode.max_new_tokens)  # fail before loading
    torch.manual_seed(cfg.seed)
    model, tok = load_checkpoint(checkpoint, dtype=cfg.model.dtype)
    lm = _make_lm(model, tok, strategy, k, tau, batch_size=cfg.eval.batch_size,
                  max_gen_toks=cfg.decode.max_new_tokens)
    t0 = time.perf_counter()
    raw = simple_evaluate(
        model=lm, tasks=[spec], task_manager=task_manager(), limit=limit,
        log_samples=True, apply_chat_template=cfg.model.chat_template, random_seed=cfg.seed,
        numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed,
    )
    wall = time.perf_counter() - t0
    result = _jsonable(raw)
    n_docs = int(result["n-samples"][task]["effective"])
    if task == CREATIVE_TASK and (base_model is not None or reference is not None):
        base = load_checkpoint(base_model, dtype=cfg.model.dtype) if base_model is not None else None
        ref = read_json(reference) if reference is not None else None
        add_story_metrics(result, base=base, reference=ref)
    if n_docs > cfg.eval.max_logged_samples and task != CREATIVE_TASK:
        result.pop("samples", None)  # keep result files small; stories are kept as k=1 references
    param = tau if strategy == "confadapt" else k
    out = {
        "run": cfg.run, "model": cfg.model.name, "chat_template": cfg.model.chat_template,
        "task": task, "checkpoint": str(checkpoint), "ckpt": checkpoint_label(checkpoint),
        "setting": setting, "strategy": strategy, "param": param, "k": k,
        "tau": tau if strategy == "confadapt" else None,
        "data_file": str(data_file) if data_file is not None else None, "limit": limit,
        "n_docs": n_docs, "wall_s": wall,
        "decode_stats": _summarise_decode_stats(lm.decode_stats()),
    }
    out.update(result)
    out["provenance"] = provenance(seed=cfg.seed, config=cfg)
    return out
