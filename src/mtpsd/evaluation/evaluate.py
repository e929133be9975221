"""One evaluation: one checkpoint x one lm-eval task x one decoding setting (method.md s. 7).

The model is wrapped in ``mtpsd.evaluation.lm_eval_adapter.MTPLM`` so every generation goes
through our decoder (static k, ConfAdapt, verify); lm-eval builds the prompts,
applies the task filters and metrics. The result JSON is lm-eval's result dict
(``results``, ``configs``, ``versions``, ``n-samples``, ``samples`` ...) plus
``decode_stats`` (effective k = tokens / forward passes, method.md s. 6; both accountings,
``eff_k_project`` and ``eff_k_authors``, whatever ``decode.convention`` reports),
``setting``/``strategy``/``param`` and ``provenance``::

    from mtpsd.evaluation.evaluate import evaluate
    out = evaluate(cfg, "results/runs/tiny/checkpoint", "mtpsd_synth_math", "confadapt-tau0.9")
    out["results"]["mtpsd_synth_math"]["exact_match,flexible-extract"]

Tasks (``mtpsd.evaluation.tasks``): our YAMLs in ``mtpsd/eval_tasks`` name their hub
dataset (or, for ``mtpsd_synth_math``, our generated test file); ``data_file=``
(``--data``) points one at a local JSONL instead (:func:`task_config` swaps in
``dataset_path: json``; prompt, few-shot, filters and metrics stay the same). The paper's
general evaluations (``aime25``, ``gpqa_main_cot_n_shot``, ``bbh_cot_fewshot``, ``ifeval``)
are lm-eval's own tasks, run with the paper's stop strings (hub data only).

As the authors ran lm-eval: few-shot examples go in as multi-turn chat when the chat
template is on (``fewshot_as_multiturn``); with it off, the prompt is the plain few-shot text
followed by "\\n\\n" (method.md section 4: input + "\\n\\n" + response; ``MTPLM(plain_prompt=)``).
The model runs in ``eval.dtype`` (float32 in the paper profile; null = ``model.dtype``),
recorded in the result as ``dtype``. Upstream tasks run with the paper's stop strings and
few-shot counts (``tasks.upstream_eval_kwargs``: GPQA 5-shot).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from mtpsd.errors import MtpsdError
from mtpsd.evaluation.tasks import (  # noqa: F401  (re-exported: the task registry's public names)
    LOCAL_FIELDS,
    TASKS_DIR,
    check_local_file,
    known_tasks,
    task_config,
    task_manager,
)

CREATIVE_TASK = "mtpsd_creative_writing"


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
             max_gen_toks: int, engine: str, plain_prompt: bool = False, convention: str = "project",
             batch_planner=None):
    from mtpsd.evaluation.lm_eval_adapter import MTPLM

    return MTPLM(pretrained=model, tokenizer=tokenizer, strategy=strategy, k=k, tau=tau,
                 batch_size=batch_size, max_gen_toks=max_gen_toks, engine=engine, plain_prompt=plain_prompt,
                 convention=convention, batch_planner=batch_planner)


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
    from mtpsd.evaluation.metrics import generation_perplexity, mean_se, rouge_l

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
             reference: str | Path | None = None, engine: str | None = None, ckpt: str | None = None,
             convention: str | None = None) -> dict:
    """Run one task with one decoding setting on one checkpoint; return the result dict.

    ``ckpt``: the label the result records (default :func:`checkpoint_label` of the directory);
    an imported checkpoint's step 0 is its base model directory, labelled "step0".

    ``limit`` defaults to ``cfg.eval.limit`` (documents, from the start of the test split);
    ``engine`` to ``cfg.decode.engine`` (``mtpsd.decoding.select``; the result records the one used);
    ``convention`` to ``cfg.decode.convention`` (recorded as ``convention``).
    """
    import torch
    from lm_eval import simple_evaluate

    from mtpsd.checkpoint import load_checkpoint
    from mtpsd.evaluation.tasks import check_task, generation_budget, is_upstream, upstream_eval_kwargs
    from mtpsd.io import provenance, read_json
    from mtpsd.settings import parse_setting

    strategy, k, tau = parse_setting(setting, k_max=cfg.decode.k_max)
    check_task(task)
    if data_file is None:
        data_file = cfg.eval.data_files.get(task)
    limit = cfg.eval.limit if limit is None else limit
    budget = generation_budget(task, overrides=cfg.eval.max_gen_toks, default=cfg.decode.max_new_tokens)
    if is_upstream(task):
        if data_file is not None:
            raise MtpsdError(f"task {task} runs on its hub dataset only (lm-eval's own task); "
                             f"drop --data / eval.data_files[{task}]")
        spec, upstream = task, upstream_eval_kwargs(task, budget)
    else:  # fail on a bad local file before loading the model
        spec, upstream = task_config(task, data_file, max_gen_toks=budget), {}
    dtype = cfg.eval.dtype or cfg.model.dtype
    batch, planner = cfg.eval.batch_size, None
    if batch is None:  # the evaluation memory plan's batch; refuses here, before a weight is loaded
        from mtpsd.evaluation.memory_plan import evaluation_batch
        from mtpsd.evaluation.plan import task_documents

        docs = task_documents(cfg, task) if data_file is None else sum(1 for _ in check_local_file(task, data_file)
                                                                           .open(encoding="utf-8"))
        batch, planner = evaluation_batch(checkpoint, task, budget=budget, k=k, dtype=dtype,
                                          documents=docs if limit is None else min(docs, limit))
    torch.manual_seed(cfg.seed)
    model, tok = load_checkpoint(checkpoint, dtype=dtype)
    lm = _make_lm(model, tok, strategy, k, tau, batch_size=batch, batch_planner=planner,
                  max_gen_toks=cfg.decode.max_new_tokens, engine=engine or cfg.decode.engine,
                  plain_prompt=not cfg.model.chat_template, convention=convention or cfg.decode.convention)
    t0 = time.perf_counter()
    raw = simple_evaluate(
        model=lm, tasks=[spec], task_manager=task_manager(), limit=limit, **upstream,
        log_samples=True, apply_chat_template=cfg.model.chat_template,
        fewshot_as_multiturn=cfg.model.chat_template, random_seed=cfg.seed,
        numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed,
    )
    wall = time.perf_counter() - t0
    result = _jsonable(raw)
    # a group (bbh_cot_fewshot) reports its subtasks' documents one by one
    n_docs = sum(int(v["effective"]) for v in result["n-samples"].values())
    if task == CREATIVE_TASK and (base_model is not None or reference is not None):
        base = load_checkpoint(base_model, dtype=dtype) if base_model is not None else None
        ref = read_json(reference) if reference is not None else None
        add_story_metrics(result, base=base, reference=ref)
    if n_docs > cfg.eval.max_logged_samples and task != CREATIVE_TASK:
        result.pop("samples", None)  # keep result files small; stories are kept as k=1 references
    param = tau if strategy == "confadapt" else k
    out = {
        "run": cfg.run, "model": cfg.model.name, "chat_template": cfg.model.chat_template,
        "task": task, "checkpoint": str(checkpoint), "ckpt": ckpt or checkpoint_label(checkpoint),
        "setting": setting, "strategy": strategy, "param": param, "k": k, "engine": lm.engine,
        "convention": lm.convention,
        "tau": tau if strategy == "confadapt" else None,
        "data_file": str(data_file) if data_file is not None else None, "limit": limit,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "max_gen_toks": budget,
        "fewshot_as_multiturn": bool(cfg.model.chat_template),
        "n_docs": n_docs, "wall_s": wall, "batch_size": lm.batch_size,
        "batch_plan": lm.planned if planner is not None else "eval.batch_size",
        "decode_stats": _summarise_decode_stats(lm.decode_stats()),
    }
    out.update(result)
    out["provenance"] = provenance(seed=cfg.seed, config=cfg)
    return out
