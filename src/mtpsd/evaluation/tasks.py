"""The lm-eval tasks mtpsd runs, set up as the paper ran them (method.md section 7).

Two kinds of task:

- ours: ``src/mtpsd/eval_tasks/mtpsd_*.yaml`` (GSM8K CoT with the "think step by step"
  suffix, CNN/DailyMail, creative writing, synthetic math); each can run on a local JSONL
  (:func:`task_config` swaps in ``dataset_path: json``).
- upstream: the paper's other evaluations through lm-eval's own task YAMLs, indexed from
  the installed ``lm_eval`` package (not copied): ``aime25``, ``gpqa_main_cot_n_shot``,
  ``bbh_cot_fewshot`` (a group of 27 subtasks) and ``ifeval``. Their data is on the hub
  only; :data:`UPSTREAM_TASKS` holds what the paper changed (stop strings) and what
  it reports (the metric).

Stop strings, from the paper's appendix (arXiv 2602.06019, "evaluation details"): GSM8K
stops at "Q:" or a stop token; AIME25, GPQA and CNN/DailyMail only at stop tokens; BBH at
"\\n\\n", "Q:" or a stop token; IFEval at "Q:" or a stop token. A "stop token" is every end
id the decoder knows (generation config, tokenizer, published-checkpoint list) plus the
end-of-text strings of the authors' lm-eval command (:data:`END_STRINGS`), which also catch
an end marker a tokenizer writes as plain text. CNN/DailyMail sets ``until: []`` in its YAML:
without ``until`` lm-eval stops at the few-shot delimiter "\\n\\n", which cut summaries.

Few-shot counts: GSM8K 8 (lm-eval's gsm8k_cot, in our YAML), BBH 3 (its YAML), GPQA-main CoT 5:
the paper names the task "GPQA Main CoT Fewshot" without a count, and neither method.md nor the
repository records one; lm-eval's ``gpqa_main_cot_n_shot`` YAML sets none (0-shot unless given).
Its prompt ("Here are some example questions from experts. Answer the final question yourself,
following the format of the previous questions exactly.") is the GPQA authors' few-shot prompt,
whose baselines use 5 examples (Rein et al. 2023, github.com/idavidrein/gpqa, prompt type
``5_shot``), so we run 5 (:func:`upstream_eval_kwargs`). Chosen, not confirmed from the paper.

Generation budget (:func:`generation_budget`): ``eval.max_gen_toks[task]`` if set, else the
task YAML's own ``max_gen_toks`` (lm-eval 0.4.13: AIME25 32768, BBH 1024, IFEval 1280,
CNN/DailyMail 128), else ``decode.max_new_tokens`` (lm-eval's model-level default, 256 in
the paper profile: GSM8K, GPQA). The paper gives no lengths of its own; it ran these tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtpsd.errors import MtpsdError

TASKS_DIR = Path(__file__).resolve().parent.parent / "eval_tasks"
# Fields a local JSONL must have for each of our tasks (hub datasets are validated by lm-eval).
LOCAL_FIELDS: dict[str, tuple[str, ...]] = {
    "mtpsd_synth_math": ("question", "answer"),
    "mtpsd_gsm8k_cot": ("question", "answer"),
    "mtpsd_cnn_dailymail": ("article", "highlights"),
    "mtpsd_creative_writing": ("prompt",),
}
# End-of-text strings of the authors' lm-eval command (besides "Q:" for GSM8K).
END_STRINGS = ("</s>", "<|end_of_text|>", "<|eot_id|>", "<|endoftext|>", "<|im_end|>")


@dataclass(frozen=True)
class UpstreamTask:
    """One of lm-eval's own tasks as the paper ran it."""

    folder: str                  # YAML folder under lm_eval/tasks/
    paper_task: str              # the task's name in paper_results.csv
    until: tuple[str, ...]       # stop strings (the paper's, replacing the YAML's)
    yaml_max_gen_toks: int | None  # the YAML's own budget (None: it sets none)
    metric: str                  # lm-eval "metric,filter" key the paper reports
    num_fewshot: int | None = None  # few-shot examples, where the YAML's count (or lm-eval's 0) is not it


UPSTREAM_TASKS: dict[str, UpstreamTask] = {
    "aime25": UpstreamTask("aime", "aime25", END_STRINGS, 32768, "exact_match,none"),
    # GPQA's YAML sets no count, so lm-eval would run it 0-shot; 5 (see GPQA_FEWSHOT)
    "gpqa_main_cot_n_shot": UpstreamTask("gpqa/cot_n_shot", "gpqa_main", END_STRINGS, None,
                                         "exact_match,flexible-extract", num_fewshot=5),
    "bbh_cot_fewshot": UpstreamTask("bbh/cot_fewshot", "bbh", ("\n\n", "Q:") + END_STRINGS, 1024,
                                    "exact_match,get-answer"),
    "ifeval": UpstreamTask("ifeval", "ifeval", ("Q:",) + END_STRINGS, 1280, "prompt_level_strict_acc,none"),
}


def lm_eval_tasks_dir() -> Path:
    """The task folder of the installed lm-eval."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def our_tasks() -> list[str]:
    return sorted(p.stem for p in TASKS_DIR.glob("mtpsd_*.yaml"))


def known_tasks() -> list[str]:
    """Every task name ``eval.tasks`` may list."""
    return sorted(our_tasks() + list(UPSTREAM_TASKS))


def is_upstream(task: str) -> bool:
    return task in UPSTREAM_TASKS


def check_task(task: str) -> None:
    if task not in known_tasks():
        raise MtpsdError(f"unknown task {task!r}; known: {', '.join(known_tasks())}")


def task_manager():
    """An lm-eval ``TaskManager`` that indexes our YAMLs and the upstream tasks' folders only
    (fast, offline; lm-eval's full index takes much longer and is not needed)."""
    from lm_eval.tasks import TaskManager

    root = lm_eval_tasks_dir()
    paths = [str(TASKS_DIR)] + [str(root / t.folder) for t in UPSTREAM_TASKS.values()]
    return TaskManager(include_path=paths, include_defaults=False)


def check_local_file(task: str, data_file: str | Path) -> Path:
    """The absolute path of a local task file after checking its rows have the task's fields."""
    from mtpsd.io import read_jsonl

    path = Path(data_file).resolve()
    rows = read_jsonl(path, required=LOCAL_FIELDS.get(task, ()))
    if not rows:
        raise MtpsdError(f"{path}: no rows for task {task}")
    return path


def _our_yaml(task: str) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    path = TASKS_DIR / f"{task}.yaml"
    if not path.is_file():
        raise MtpsdError(f"unknown task {task!r}; known: {', '.join(known_tasks())}")
    return dict(load_yaml(path, resolve_func=True))


def generation_budget(task: str, *, overrides: dict[str, int] | None = None, default: int) -> int:
    """Tokens a task may generate: ``overrides[task]``, else the task YAML's own
    ``max_gen_toks``, else ``default`` (``decode.max_new_tokens``)."""
    check_task(task)
    if overrides and task in overrides:
        return int(overrides[task])
    if is_upstream(task):
        own = UPSTREAM_TASKS[task].yaml_max_gen_toks
    else:
        own = (_our_yaml_text(task).get("generation_kwargs") or {}).get("max_gen_toks")
    return int(own) if own is not None else int(default)


def _our_yaml_text(task: str) -> dict[str, Any]:
    """One of our YAMLs without resolving ``!function`` (no lm-eval import: the workflow's
    plan reads budgets while Snakemake parses)."""
    import yaml

    loader = type("FunctionAsText", (yaml.SafeLoader,), {})
    loader.add_constructor("!function", lambda lo, node: lo.construct_scalar(node))
    return yaml.load((TASKS_DIR / f"{task}.yaml").read_text(encoding="utf-8"), Loader=loader)


def upstream_eval_kwargs(task: str, max_gen_toks: int) -> dict[str, Any]:
    """Keyword arguments of ``simple_evaluate`` for an upstream task: its ``gen_kwargs`` and,
    where the paper's few-shot count differs from the YAML's, ``num_fewshot``."""
    out: dict[str, Any] = {"gen_kwargs": upstream_gen_kwargs(task, max_gen_toks)}
    if UPSTREAM_TASKS[task].num_fewshot is not None:
        out["num_fewshot"] = UPSTREAM_TASKS[task].num_fewshot
    return out


def upstream_gen_kwargs(task: str, max_gen_toks: int) -> dict[str, Any]:
    """``gen_kwargs`` for ``simple_evaluate`` that make an upstream task run as the paper ran it
    (they update every subtask's ``generation_kwargs``)."""
    spec = UPSTREAM_TASKS[task]
    return {"until": list(spec.until), "max_gen_toks": int(max_gen_toks), "do_sample": False}


def task_config(task: str, data_file: str | Path | None = None, *,
                max_gen_toks: int | None = None) -> dict[str, Any]:
    """One of our tasks' lm-eval config dict (functions resolved), on a local JSONL if given.

    ``max_gen_toks`` sets the generation budget (:func:`generation_budget` computes it).
    """
    if is_upstream(task):
        raise MtpsdError(f"task {task!r} is lm-eval's own (hub data only); it has no local-file variant")
    cfg = _our_yaml(task)
    if data_file is not None:
        local = check_local_file(task, data_file)
        for key in ("dataset_name", "training_split", "validation_split", "fewshot_split"):
            cfg.pop(key, None)
        cfg.update(dataset_path="json", dataset_kwargs={"data_files": {"test": str(local)}},
                   test_split="test")
    if max_gen_toks is not None:
        cfg["generation_kwargs"] = dict(cfg.get("generation_kwargs") or {}) | {"max_gen_toks": int(max_gen_toks)}
    if data_file is None and cfg.get("dataset_path") == "json":  # shipped default local file (synth math)
        default = cfg["dataset_kwargs"]["data_files"]["test"]
        if not Path(default).is_file():
            raise MtpsdError(f"{default}: data file of task {task} not found (run from the repository "
                             "root after prepare_data, or pass --data FILE)")
    return cfg
