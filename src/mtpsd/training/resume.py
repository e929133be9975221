"""Checkpoints of a training run that a kill, a full disk or a damaged file cannot lose.

``checkpoint_dir/step_{N:06d}/`` holds an evaluation snapshot (HF model + tokenizer), a resume
state (``state/``: weights, optimizer, scheduler, RNG from ``accelerator.save_state``;
``trainer_state.pt``: step, data cursor, layout-sampler RNG, metrics), or both, and
``manifest.json``: every file of the directory with its size in bytes.

- Writing (:func:`save_checkpoint`): everything goes into ``.step_{N:06d}.tmp/``, the manifest
  last, and the directory is renamed into place, so a ``step_*`` directory is complete when it
  exists (a kill mid-save leaves only the hidden temporary, which no reader looks at). A full
  disk (ENOSPC, EDQUOT) stops the run with one line naming the checkpoint and the free space;
  the partial temporary is removed and the checkpoints already written stay as they are.
- Retention (:func:`prune`): the two newest resume states, and the snapshots at
  ``eval.checkpoint_steps``; older resume states are deleted only after the new one is in place
  (at most three exist for a moment; ``training.memory_plan.disk_plan`` counts them).
- Resuming (:func:`load_resume_state`): the newest resume state whose files match its manifest
  and load. A damaged one (a truncated or missing file; a file the loaders reject) is skipped
  with a warning naming the file, and the run resumes from the one before. When every resume
  state is damaged the run stops instead of silently starting again from step 0.

The manifest holds sizes, not hashes: a truncated or missing file is found without reading
gigabytes at every save; damage that keeps a file's size is found only if loading fails.
"""

from __future__ import annotations

import errno
import json
import shutil
import warnings
from pathlib import Path

import torch

from mtpsd.errors import MtpsdError
from mtpsd.io import atomic_write_json

MANIFEST = "manifest.json"
KEEP_RESUME_STATES = 2  # the newest, and the one a run falls back to when the newest is damaged
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "os error 28)", "os error 122)")
_NEARLY_FULL = 16 * 2**20  # bytes free after a short write: the file system is full


def step_of(path: Path) -> int:
    """The step of a ``step_{N:06d}`` directory."""
    return int(path.name[len("step_"):])


def step_dirs(checkpoint_dir: str | Path) -> list[Path]:
    """Complete step directories, oldest first (temporaries start with a dot and are never listed)."""
    d = Path(checkpoint_dir)
    return sorted((p for p in d.glob("step_*") if p.is_dir() and p.name[5:].isdigit()), key=step_of)


def has_resume_state(step_dir: Path) -> bool:
    return (step_dir / "trainer_state.pt").is_file()


def write_manifest(step_dir: Path) -> None:
    """List every file under ``step_dir`` (but the manifest) with its size."""
    files = {str(p.relative_to(step_dir)): p.stat().st_size
             for p in sorted(step_dir.rglob("*")) if p.is_file() and p.name != MANIFEST}
    atomic_write_json(step_dir / MANIFEST, {"files": files})


def manifest_problem(step_dir: Path) -> str | None:
    """What is wrong with ``step_dir`` against its manifest (naming the file), or None.

    A directory without a manifest (written before manifests existed) is taken as it is."""
    path = step_dir / MANIFEST
    if not path.exists():
        return None
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError) as e:
        return f"{path} is damaged ({e})"
    for name, size in files.items():
        f = step_dir / name
        if not f.is_file():
            return f"{f} is missing"
        if f.stat().st_size != size:
            return f"{f} is damaged: {f.stat().st_size:,} bytes, {size:,} written"
    return None


def save_checkpoint(accelerator, student, tok, step_dir: Path, trainer_state: dict | None, *,
                    snapshot: bool, keep_steps: set[int]) -> None:
    """Write ``step_dir`` atomically: an HF model + tokenizer if ``snapshot``, the resume state
    if ``trainer_state``, the manifest; then :func:`prune` older step directories."""
    tmp = step_dir.parent / f".{step_dir.name}.tmp"
    try:
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        if trainer_state is not None:
            accelerator.save_state(str(tmp / "state"))
        state_dict = accelerator.get_state_dict(student) if snapshot else None  # collective under FSDP
        accelerator.wait_for_everyone()  # every rank's shard of state/ is on disk
        if accelerator.is_main_process:
            tmp.mkdir(parents=True, exist_ok=True)
            if snapshot:
                model = accelerator.unwrap_model(student)
                model.save_pretrained(tmp, state_dict=state_dict)
                tok.save_pretrained(tmp)
            if trainer_state is not None:
                torch.save(trainer_state, tmp / "trainer_state.pt")
                atomic_write_json(tmp / "trainer_state.json", {k: v for k, v in trainer_state.items()
                                                               if k not in ("layout_rng", "metrics")})
            write_manifest(tmp)
            if step_dir.exists():
                shutil.rmtree(step_dir)
            tmp.rename(step_dir)
            if trainer_state is not None:
                prune(step_dir, keep_steps)
    except Exception as e:
        if not disk_full(e, step_dir.parent):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # give the space of the partial checkpoint back
        raise MtpsdError(disk_full_message(step_dir)) from None
    accelerator.wait_for_everyone()


def disk_full(err: BaseException, folder: Path) -> bool:
    """Whether writing into ``folder`` failed for want of space. OSError carries ENOSPC/EDQUOT and
    safetensors names "os error 28", but torch.save reports a short write without its cause
    ("unexpected pos ..."): such a write has filled the file system to its last block, so the
    free space (read before the partial file is removed) tells."""
    e: BaseException | None = err
    while e is not None:
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return True
        if any(m in str(e) for m in _DISK_FULL_TEXT):
            return True
        e = e.__cause__ or e.__context__
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False


def disk_full_message(step_dir: Path) -> str:
    """One line: which checkpoint did not fit, the free space, and what is still there."""
    free = shutil.disk_usage(step_dir.parent).free
    done = [p for p in step_dirs(step_dir.parent) if has_resume_state(p)]
    kept = (f"the previous checkpoint {done[-1]} is intact: free space and run the same command "
            "again, training resumes from it" if done else
            "no earlier resume state exists: free space and run the same command again")
    need = sum(f.stat().st_size for f in done[-1].rglob("*") if f.is_file()) if done else None
    size = f"; a checkpoint here takes {need / 2**20:,.1f} MiB" if need else ""
    return (f"no space left on the device while writing checkpoint {step_dir} ({free / 2**20:,.1f} MiB free "
            f"after removing the partial checkpoint{size}); {kept}")


def prune(newest: Path, keep_steps: set[int]) -> None:
    """Keep the resume states of ``newest`` and of the newest one before it; drop other resume
    states (also those after ``newest``, left by a run that resumed from before them) and step
    directories that are no evaluation snapshot (``keep_steps``)."""
    n = step_of(newest)
    resume = [p for p in step_dirs(newest.parent) if has_resume_state(p) and step_of(p) <= n]
    keep = set(resume[-KEEP_RESUME_STATES:]) | {newest}
    for old in step_dirs(newest.parent):
        if old in keep:
            continue
        if step_of(old) not in keep_steps:
            shutil.rmtree(old)
        elif (old / "state").is_dir() or has_resume_state(old):
            shutil.rmtree(old / "state", ignore_errors=True)
            (old / "trainer_state.pt").unlink(missing_ok=True)
            (old / "trainer_state.json").unlink(missing_ok=True)
            write_manifest(old)


def load_resume_state(accelerator, checkpoint_dir: str | Path) -> tuple[Path, dict] | None:
    """Load the newest good resume state into the prepared objects of ``accelerator``; return
    (its directory, its trainer state), or None when the run has none (a fresh start).

    A damaged one is skipped with a warning naming the file; :class:`MtpsdError` when all are.
    """
    candidates = [p for p in reversed(step_dirs(checkpoint_dir)) if has_resume_state(p)]
    skipped = []
    for cand in candidates:
        problem = manifest_problem(cand)
        if problem is None:
            try:
                st = torch.load(cand / "trainer_state.pt", weights_only=False)
                accelerator.load_state(str(cand / "state"))
                return cand, st
            except (MemoryError, torch.OutOfMemoryError):
                raise  # the machine's fault, not the checkpoint's
            except Exception as e:  # noqa: BLE001 - any other loader error: this one is unusable
                problem = f"{cand} does not load ({type(e).__name__}: {str(e)[:300]})"
        skipped.append(problem)
        if accelerator.is_main_process:
            warnings.warn(f"skipping a damaged checkpoint: {problem}", stacklevel=2)
    if skipped:
        raise MtpsdError(f"no usable resume state in {checkpoint_dir}: {'; '.join(skipped)}. Move the damaged "
                         "step directories away to train from step 0 (or restore them from a copy)")
    return None
