"""Preflight before any GPU hour (``mtpsd doctor``): one checklist, the first thing to fix.

    mtpsd doctor --config config/config.yaml --config config/paper.yaml --config config/published.yaml

Checks, in the order a fix is needed (every check runs, so the checklist is complete):

1. ``versions``: the installed libraries against the tested pins (this package's own
   ``Requires-Dist``, i.e. ``pyproject.toml``);
2. ``gpu``: a CUDA GPU, and its free memory;
3. ``training memory``: each run that trains, its training memory plan
   (``mtpsd.training.memory_plan``) against the GPU's free memory;
4. ``evaluation memory``: each run's evaluation memory plan (``mtpsd.evaluation.memory_plan``):
   every task gets a batch that fits, or ``eval.batch_size`` fits;
5. ``disk``: free space where ``results/`` and the hub cache live against what the run writes
   there, estimated from parameter counts and dtypes (hub downloads in the checkpoints' bf16,
   ``results/models`` and ``mtp_init`` copies in float32 as ``import-base`` writes them, the
   training checkpoints of ``disk_plan``, imported checkpoints in their own dtype; datasets
   are not counted);
6. ``hub``: the hub is reachable when the config reads from it (not ``HF_HUB_OFFLINE``);
7. ``hub token``: a token with access to the gated datasets the tasks read (GPQA);
8. ``nltk``: the ``punkt_tab`` data IFEval's checks load (lm-eval fetches it on first use,
   which fails offline or hours in);
9. ``lm-eval tasks``: every task of the config resolves in lm-eval's task index.

The probes (``_gpus``, ``_disk_free``, ``_hub_reachable``, ``_hf_token``, ``_gated_access``,
``_nltk_has``, ``_installed``) are module functions so tests replace them with local stand-ins.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mtpsd.errors import MtpsdError

GiB = 1024**3
# lm-eval task -> the gated hub dataset it reads (a token with accepted terms is needed)
GATED_DATASETS = {"gpqa_main_cot_n_shot": "Idavidrein/gpqa"}
# tasks whose checks need nltk data, and which
NLTK_DATA = {"ifeval": "tokenizers/punkt_tab"}
HUB_DTYPE_BYTES = 2  # the paper's models and the published checkpoints are bf16 on the hub
COPY_DTYPE_BYTES = 4  # import-base and add-mtp-token write float32 (mtpsd.mtp_token.load_base)


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not applicable (skipped)
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[self.ok]
        return f"[{mark}] {self.name}: {self.detail}" + (f"\n         fix: {self.fix}" if self.ok is False else "")


# ---- probes (tests replace these) ----------------------------------------------------------


def _gpus() -> list[tuple[str, float, float]]:
    """(name, free bytes, total bytes) of every CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        out.append((torch.cuda.get_device_name(i), float(free), float(total)))
    return out


def _disk_free(path: Path) -> tuple[int, float]:
    """(device id, free bytes) of the file system holding ``path`` (its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    return os.stat(p).st_dev, float(shutil.disk_usage(p).free)


def _hub_reachable() -> str | None:
    """None when the hub answers, else why not."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import HfApi

        HfApi().model_info("openai-community/gpt2", timeout=10)
    except Exception as e:  # noqa: BLE001 (any failure means: not reachable from here)
        return f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return None


def _hf_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def _gated_access(repo: str, token: str) -> str | None:
    """None when ``token`` may read the dataset ``repo``, else why not."""
    try:
        from huggingface_hub import HfApi

        HfApi().auth_check(repo, repo_type="dataset", token=token)
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return None


def _nltk_has(resource: str) -> bool:
    import nltk

    try:
        nltk.data.find(resource)
    except LookupError:
        return False
    return True


def _installed(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _pins() -> dict[str, str]:
    """package -> pinned version (``==``) of this package's dependencies (extras excluded)."""
    import re
    from importlib.metadata import requires

    out = {}
    for req in requires("mtpsd") or []:
        if "extra ==" in req:
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^;\s]+)", req)
        if m:
            out[m.group(1)] = m.group(2)
    return out


# ---- checks ----------------------------------------------------------------------------------


def _same_release(installed: str | None, pinned: str) -> bool:
    """``2.13.0+cu128`` is the tested ``2.13.0`` (a local build label: CPU or CUDA wheel)."""
    return installed is not None and installed.split("+")[0] == pinned


def check_versions() -> Check:
    from importlib.metadata import PackageNotFoundError

    try:
        pins = _pins()
    except PackageNotFoundError:
        return Check("versions", None, "mtpsd is not installed as a package (run from src/?): its pins are unknown")
    bad = [f"{p} {_installed(p) or 'missing'} (tested {v})" for p, v in sorted(pins.items())
           if not _same_release(_installed(p), v)]
    if bad:
        return Check("versions", False, "; ".join(bad), "pip install -e '.[gpu]' in a fresh environment (make install)")
    return Check("versions", True, f"{len(pins)} pinned libraries at their tested versions")


def check_gpu(gpus, *, need_gpu: bool) -> Check:
    if not gpus:
        if need_gpu:
            return Check("gpu", False, "no CUDA GPU visible to torch",
                         "run on the GPU machine (nvidia-smi lists it; CUDA_VISIBLE_DEVICES not empty)")
        return Check("gpu", None, "no CUDA GPU (the config has no pretrained model: CPU run)")
    desc = ", ".join(f"{n} ({f / GiB:.1f} of {t / GiB:.1f} GiB free)" for n, f, t in gpus)
    return Check("gpu", True, f"{len(gpus)} GPU(s): {desc}")


def check_training_memory(runs, free: float | None) -> Check:
    from mtpsd.evaluation.memory_plan import run_model_shape
    from mtpsd.training import memory_plan as mp

    if free is None:
        return Check("training memory", None, "no GPU to plan for")
    lines, problems, unread = [], [], []
    for run, (cfg, imported) in runs.items():
        if imported:
            continue
        try:
            shape = run_model_shape(cfg)
        except MtpsdError as e:
            unread.append(f"{run}: {e}")
            continue
        if shape is None:
            continue
        setup = mp.setup_from_config(cfg, device="cuda")
        try:
            plan = mp.check_fits(shape, setup, free)
            lines.append(f"{run} {plan.peak / GiB:.1f} GiB")
        except MtpsdError as e:
            problems.append(f"{run}: {e}")
    if unread and not lines and not problems:
        return Check("training memory", None, f"not planned: {unread[0]}")
    if not lines and not problems:
        return Check("training memory", None, "no run trains a pretrained model")
    if problems:
        return Check("training memory", False, problems[0], "take a setting the message names (config/README.md, "
                     "'Memory plan'), or train that run on a larger GPU")
    return Check("training memory", True, f"fits {free / GiB:.1f} GiB free: " + ", ".join(lines))


def check_eval_memory(runs, free: float | None) -> Check:
    from dataclasses import replace

    from mtpsd.evaluation import memory_plan as em

    if free is None:
        return Check("evaluation memory", None, "no GPU to plan for")
    lines, problems, unread = [], [], []
    for run, (cfg, _) in runs.items():
        try:
            shape = em.run_eval_shape(cfg)
        except MtpsdError as e:
            unread.append(f"{run}: {e}")
            continue
        if shape is None:
            continue
        plans = em.plan_tasks(shape, em.task_setups(cfg), free)
        for tp in plans:
            if tp.plan is None:
                problems.append(f"{run} {tp.setup.task}: {tp.error}")
            elif cfg.eval.batch_size is not None and not em.plan_eval_memory(
                    shape, replace(tp.setup, batch=cfg.eval.batch_size)).fits(free):
                problems.append(f"{run} {tp.setup.task}: eval.batch_size {cfg.eval.batch_size} does not fit "
                                f"{free / GiB:.1f} GiB (the plan's batch: {tp.batch})")
        lines.append(f"{run} " + " ".join(f"{tp.setup.task}:{tp.batch}" for tp in plans))
    if not lines:
        return Check("evaluation memory", None, f"not planned: {unread[0]}" if unread else "no pretrained model to plan for")
    if problems:
        return Check("evaluation memory", False, problems[0], "eval.batch_size: null (planned per task), or what "
                     "the message names")
    return Check("evaluation memory", True, "batches per task: " + "; ".join(lines))


def disk_needs(runs) -> dict[str, float]:
    """Bytes the runs write: {"hub": hub cache downloads, "results": copies under results/}."""
    from mtpsd.evaluation.memory_plan import run_eval_shape, run_model_shape
    from mtpsd.training import memory_plan as mp

    hub: dict[str, float] = {}
    results: dict[str, float] = {}
    for run, (cfg, imported) in runs.items():
        shape = run_eval_shape(cfg)
        if shape is None:
            continue
        params = shape.params
        base = cfg.model.pretrained
        if not Path(str(base)).exists():
            hub[str(base)] = params * HUB_DTYPE_BYTES
        results[f"models/{cfg.model.name}"] = params * COPY_DTYPE_BYTES
        if imported:
            hub[str(cfg.checkpoint)] = params * HUB_DTYPE_BYTES
            results[f"runs/{run}/checkpoint"] = params * HUB_DTYPE_BYTES
            continue
        results[f"runs/{run}/mtp_init"] = params * COPY_DTYPE_BYTES
        tc = cfg.train
        results[f"runs/{run}/checkpoints"] = mp.disk_plan(
            run_model_shape(cfg), mp.setup_from_config(cfg, device="cuda"), steps=tc.steps,
            checkpoint_steps=cfg.eval.checkpoint_steps, checkpoint_every=tc.checkpoint_every)["peak_bytes"]
    return {"hub": sum(hub.values()), "results": sum(results.values())}


def hub_cache_dir() -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE)


def check_disk(runs, results_dir: Path) -> Check:
    try:
        needs = disk_needs(runs)
    except MtpsdError as e:
        return Check("disk", None, f"not planned: {e}")
    if not any(needs.values()):
        return Check("disk", None, "no pretrained model: nothing large to store")
    where = {"results": Path(results_dir), "hub": hub_cache_dir()}
    per_fs: dict[int, list] = {}
    for key, path in where.items():
        dev, free = _disk_free(path)
        per_fs.setdefault(dev, [free, 0.0, []])
        per_fs[dev][1] += needs[key]
        per_fs[dev][2].append(f"{key} {needs[key] / GiB:.0f} GiB ({path})")
    detail = "; ".join(f"{', '.join(parts)}: {need / GiB:.0f} GiB needed, {free / GiB:.0f} GiB free"
                       for free, need, parts in per_fs.values())
    short = [(free, need) for free, need, _ in per_fs.values() if need > free]
    if short:
        free, need = short[0]
        return Check("disk", False, detail, f"free {(need - free) / GiB:.0f} GiB more, or point HF_HOME / the "
                     "results folder at a larger disk (weights only; datasets come on top)")
    return Check("disk", True, detail + " (model weights; datasets not counted)")


def _hub_sources(runs) -> list[str]:
    out = []
    for cfg, imported in runs.values():
        for src in (cfg.model.pretrained if cfg.model.source == "pretrained" else None,
                    getattr(cfg, "checkpoint", None) if imported else None):
            if src and not Path(str(src)).exists() and not str(src).startswith("pypi:"):
                out.append(str(src))
        if cfg.data.source in ("metamathqa", "gsm8k", "magpie") and not cfg.data.path:
            out.append(f"{cfg.data.source} data")
        # the prepared test split serves these tasks (the workflow's EVAL_ON_TEST_SPLIT)
        local = set(cfg.eval.data_files) | {"mtpsd_synth_math"}
        if cfg.data.test_source == "gsm8k":
            local.add("mtpsd_gsm8k_cot")
            if not cfg.data.test_path:
                out.append("gsm8k test data")
        out += [t for t in cfg.eval.tasks if t not in local]
    return sorted(set(out))


def check_hub(runs) -> Check:
    needed = _hub_sources(runs)
    if not needed:
        return Check("hub", None, "the config reads nothing from the hub")
    why = _hub_reachable()
    if why:
        return Check("hub", False, f"the config reads {', '.join(needed[:4])}{' ...' if len(needed) > 4 else ''} "
                     f"from the hub, which is not reachable ({why})",
                     "unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE (the Makefile sets them for tests) and check "
                     "the network, or pre-download into the hub cache")
    return Check("hub", True, f"reachable ({len(needed)} sources)")


def check_token(runs) -> Check:
    gated = sorted({GATED_DATASETS[t] for cfg, _ in runs.values() for t in cfg.eval.tasks if t in GATED_DATASETS})
    if not gated:
        return Check("hub token", None, "no gated dataset in the tasks")
    token = _hf_token()
    if not token:
        return Check("hub token", False, f"no hub token; {', '.join(gated)} is gated",
                     f"accept the terms on the dataset's hub page ({gated[0]}), then `hf auth login` "
                     "(or export HF_TOKEN)")
    for repo in gated:
        why = _gated_access(repo, token)
        if why:
            return Check("hub token", False, f"the token cannot read {repo} ({why})",
                         f"accept the terms on {repo}'s hub page with the token's account")
    return Check("hub token", True, f"token reads {', '.join(gated)}")


def check_nltk(runs) -> Check:
    needed = sorted({NLTK_DATA[t] for cfg, _ in runs.values() for t in cfg.eval.tasks if t in NLTK_DATA})
    if not needed:
        return Check("nltk", None, "no task needs nltk data")
    missing = [r for r in needed if not _nltk_has(r)]
    if missing:
        names = " ".join(r.split("/")[-1] for r in missing)
        return Check("nltk", False, f"missing {', '.join(missing)} (IFEval loads it; lm-eval fetches it on first "
                     "use, which fails offline)", f"python -m nltk.downloader {names}")
    return Check("nltk", True, ", ".join(needed) + " present")


def check_tasks(runs) -> Check:
    from mtpsd.evaluation.tasks import task_manager

    tasks = sorted({t for cfg, _ in runs.values() for t in cfg.eval.tasks})
    index = set(task_manager().all_tasks)
    missing = [t for t in tasks if t not in index]
    if missing:
        return Check("lm-eval tasks", False, f"not in lm-eval's index: {', '.join(missing)}",
                     "install the pinned lm-eval (make install); task names: config/README.md")
    return Check("lm-eval tasks", True, f"{len(tasks)} resolve: {', '.join(tasks)}")


def run_checks(raw: dict, *, results_dir: str | Path = "results", gpu_memory_gib: float | None = None) -> list[Check]:
    """Every check for a merged raw config (``gpu_memory_gib`` replaces the GPU's free memory)."""
    from mtpsd.evaluation.plan import resolve_runs

    runs = resolve_runs(raw)
    need_gpu = any(cfg.model.source == "pretrained" for cfg, _ in runs.values())
    gpus = _gpus()
    free = gpu_memory_gib * GiB if gpu_memory_gib is not None else (min(f for _, f, _ in gpus) if gpus else None)
    return [check_versions(), check_gpu(gpus, need_gpu=need_gpu), check_training_memory(runs, free),
            check_eval_memory(runs, free), check_disk(runs, Path(results_dir)), check_hub(runs), check_token(runs),
            check_nltk(runs), check_tasks(runs)]


def render(checks: list[Check]) -> str:
    lines = ["mtpsd doctor:"] + [c.line() for c in checks]
    first = next((c for c in checks if c.ok is False), None)
    lines.append(f"first to fix: {first.name}: {first.fix}" if first else "all checks passed")
    return "\n".join(lines) + "\n"
