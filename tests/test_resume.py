"""Resume states that survive faults (mtpsd.training.resume): a damaged newest checkpoint is
skipped for the one before, a full disk mid-save stops the run with one line and keeps the
previous checkpoint, and no partial file is ever taken for a complete one.

The full disk here is an OSError(ENOSPC) injected at torch.save's write of the optimizer state,
so that it runs everywhere in a few seconds; tests/test_faults.py fills a real tmpfs."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mtpsd.errors import MtpsdError
from mtpsd.training import resume

from .conftest import make_train_dir
from .test_train import KEYS, _cfg, _params, _run


# the tests that train are slow (a few seconds of real training each, after the fixture's run)
@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Training inputs and one uninterrupted 6-step run ("full") to compare with."""
    torch.set_num_threads(1)
    r = make_train_dir(tmp_path_factory.mktemp("resume"), n_train=40)
    _run(r, "full", _cfg())
    return r


def _same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(_params(a), _params(b), strict=True))


def _metrics(d):
    return [{k: r[k] for k in KEYS} for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.slow
def test_two_resume_states_with_manifests_are_kept(root):
    ck = root / "full" / "checkpoints"
    assert [p.name for p in resume.step_dirs(ck)] == ["step_000004", "step_000006"]
    for d in resume.step_dirs(ck):
        assert resume.has_resume_state(d) and resume.manifest_problem(d) is None
        listed = set(json.loads((d / resume.MANIFEST).read_text())["files"])
        assert {"trainer_state.pt", "state/model.safetensors", "state/optimizer.bin"} <= listed


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated model.safetensors", "truncated optimizer.bin",
                                    "optimizer.bin overwritten, same size"])
def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(root, damage):
    """Killed after step 5 (resume states 2 and 4), step 4 damaged: the run warns naming the file,
    resumes from step 2 (not from nothing) and ends with the uninterrupted run's weights."""
    name = "damaged-" + damage.split()[0] + "-" + damage.split()[1][:5]
    part, d = _run(root, name, _cfg(), stop_after=5)
    ck = d / "checkpoints"
    assert [p.name for p in resume.step_dirs(ck)] == ["step_000002", "step_000004"]
    f = ck / "step_000004" / "state" / ("model.safetensors" if "model" in damage else "optimizer.bin")
    size = f.stat().st_size
    if damage.startswith("truncated"):
        os.truncate(f, size // 2)
    else:  # the manifest's sizes still match; the loader rejects it
        f.write_bytes(b"\0" * size)
    with pytest.warns(UserWarning, match=f"skipping a damaged checkpoint: {f if damage.startswith('trunc') else ck / 'step_000004'}"):
        resumed, d = _run(root, name, _cfg())
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    assert _metrics(d) == _metrics(root / "full")  # steps 3 and 4 were trained again, identically
    assert _same_weights(d / "checkpoint", root / "full" / "checkpoint")


@pytest.mark.slow
def test_every_resume_state_damaged_refuses_to_start_over(root):
    part, d = _run(root, "all-damaged", _cfg(), stop_after=5)
    for step_dir in resume.step_dirs(d / "checkpoints"):
        os.truncate(step_dir / "trainer_state.pt", 10)
    with pytest.warns(UserWarning), pytest.raises(MtpsdError, match="no usable resume state") as e:
        _run(root, "all-damaged", _cfg())
    assert "step_000002/trainer_state.pt" in str(e.value) and "step_000004/trainer_state.pt" in str(e.value)
    assert not (d / "checkpoint").exists()


@pytest.mark.slow
def test_a_full_disk_mid_save_stops_cleanly_and_the_rerun_resumes(root, monkeypatch):
    """ENOSPC while step 4's optimizer state is written (half of it on disk): one clear error,
    the partial checkpoint removed, step 2 intact and loadable; the rerun resumes from step 2."""
    real_save = torch.save

    def disk_full_at_step_4(obj, f, *a, **kw):
        if str(f).endswith(".step_000004.tmp/state/optimizer.bin"):
            with open(f, "wb") as out:
                out.write(b"\0" * 1000)  # what fitted
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", disk_full_at_step_4)
    with pytest.raises(MtpsdError, match="no space left on the device while writing checkpoint") as e:
        _run(root, "disk-full", _cfg())
    monkeypatch.setattr(torch, "save", real_save)
    ck = root / "disk-full" / "checkpoints"
    assert "step_000002 is intact" in str(e.value) and "MiB free" in str(e.value)
    assert sorted(p.name for p in ck.iterdir()) == ["step_000002"]  # no partial .step_000004.tmp left
    assert resume.manifest_problem(ck / "step_000002") is None
    torch.load(ck / "step_000002" / "trainer_state.pt", weights_only=False)  # loadable
    resumed, d = _run(root, "disk-full", _cfg())
    assert _metrics(d) == _metrics(root / "full")
    assert _same_weights(d / "checkpoint", root / "full" / "checkpoint")


def test_disk_full_is_recognised_from_each_writer(tmp_path):
    """OSError carries ENOSPC, safetensors says "os error 28", torch.save only "unexpected pos"
    (then the free space tells; measured on a full tmpfs: 0 bytes after the short write)."""
    assert resume.disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert resume.disk_full(RuntimeError("Error while serializing: I/O error: No space left on device "
                                         "(os error 28)"), tmp_path)
    assert not resume.disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                                             "576 vs 534"), tmp_path)  # tmp_path has room
    assert not resume.disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path)


_WRITER = """
import sys
from mtpsd.io import atomic_write_jsonl
def rows():
    for i in range(10**9):
        yield {"i": i, "text": "x" * 200}
atomic_write_jsonl(sys.argv[1], rows())
"""


def test_a_kill_mid_write_never_leaves_a_partial_result(tmp_path):
    """SIGKILL while a result is being written (megabytes already out): the old result stays
    whole at its path, the partial text is only in a hidden temporary that no reader lists."""
    from mtpsd.io import atomic_write_json, read_json

    out = tmp_path / "result.json"
    atomic_write_json(out, {"complete": True})
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(out)])
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 2**20 for p in tmp_path.glob(".result.json.*.tmp")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_json(out) == {"complete": True}
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["result.json"]
