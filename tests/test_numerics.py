"""Pinned CPU numerics: one env file read everywhere, and a fingerprint that reproduces exactly.

The fingerprint (a few dozen steps of tiny pretraining and distillation: loss sequence and
weight hashes, ``mtpsd.fingerprint``) is committed in ``tests/fixtures/fingerprint.json``;
under the pinned numerics every x86-64 machine with the same dependency versions must
reproduce it bit for bit. Regenerate it on purpose with ``make fingerprint``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from mtpsd import numerics

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "fingerprint.json"


def test_env_file_is_the_one_source():
    env = numerics.pinned_env()
    assert {"MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"} <= set(env)
    makefile = (REPO / "Makefile").read_text()
    assert "include src/mtpsd/numerics.env" in makefile
    exported = next(line for line in makefile.splitlines() if line.startswith("export MKL_CBWR"))
    assert set(exported.split()[1:]) == set(env), "the Makefile must export every pinned variable"


def test_apply_sets_unset_keys_and_native_turns_it_off():
    env: dict[str, str] = {"MKL_CBWR": "COMPATIBLE"}
    added = numerics.apply(env)
    assert env["MKL_CBWR"] == "COMPATIBLE"  # the caller's explicit choice wins
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and "MKL_CBWR" not in added
    native = {"MTPSD_NUMERICS": "native"}
    assert numerics.apply(native) == {} and native == {"MTPSD_NUMERICS": "native"}
    with pytest.raises(ValueError, match="MTPSD_NUMERICS"):
        numerics.enabled({"MTPSD_NUMERICS": "fast"})


def test_test_suite_runs_pinned():
    import torch

    if numerics.enabled():
        assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2"
        assert torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT")


def _skip_reason() -> str | None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the fingerprint is defined for x86-64 (this is {platform.machine()})"
    if not numerics.enabled():
        return "MTPSD_NUMERICS=native: numbers depend on this machine"
    if not FIXTURE.is_file():
        return f"{FIXTURE} missing: run `make fingerprint`"
    import tokenizers
    import torch
    import transformers

    want = json.loads(FIXTURE.read_text())["setting"]
    have = {"torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__}
    changed = {k: (want.get(k), v) for k, v in have.items() if want.get(k) != v}
    if changed:
        return f"dependency versions differ from the fingerprint's {changed}: regenerate with `make fingerprint`"
    return None


@pytest.mark.slow
def test_fingerprint_reproduces_exactly(tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if k not in numerics.pinned_env()}  # the file alone decides
    # the fixture was made with 2 threads: computing it with 1 also pins that the thread count
    # does not move the weights (the workflow shares cores out among side-by-side trainings)
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-m", "mtpsd", "fingerprint", "--check", str(FIXTURE),
                          "--out", str(tmp_path / "fp.json")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    got = json.loads((tmp_path / "fp.json").read_text())
    assert got["setting"]["numerics"]["mode"] == "pinned"
    assert got["setting"]["threads"] == 1 and json.loads(FIXTURE.read_text())["setting"]["threads"] == 2
    assert len(got["pretrain_losses"]) == 30 and len(got["distill_losses"]) == 30
