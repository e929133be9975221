"""Library messages a user cannot act on are silenced at their source, precisely: torchao's
optional-kernel load failures and torch's pytree deprecation for torchao's enums never reach
an `mtpsd` verb's output; other messages of the same loggers still do."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from mtpsd.library_noise import FILTERS, install
from tests.conftest import REPO

NOISE = ("Failed to load", "register_constant() on Enum subclasses is deprecated")


def _record(logger: str, msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord(logger, logging.WARNING, __file__, 1, msg, args, None)


def test_filters_drop_only_the_named_messages():
    install()
    install()  # idempotent
    assert logging.getLogger("torchao").filters.count(FILTERS["torchao"]) == 1
    ao, tree = FILTERS["torchao"], FILTERS["torch.utils._pytree"]
    assert not ao(_record("torchao", "Failed to load /x/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: "
                                     "Could not load this library"))
    assert ao(_record("torchao", "Failed to load /x/site-packages/other/_C.so: nope"))  # not torchao's kernels
    assert ao(_record("torchao", "Skipping import of cpp extensions due to incompatible torch version"))

    class TorchaoEnum:
        __module__ = "torchao.quantization.quantize_.common.kernel_preference"

    class OtherEnum:
        __module__ = "somewhere.else"

    msg = ("%s is an Enum subclass and is now natively supported by torch.compile as an opaque value type. "
           "Calling register_constant() on Enum subclasses is deprecated and will be an error in a future release.")
    assert not tree(_record("torch.utils._pytree", msg, TorchaoEnum))
    assert tree(_record("torch.utils._pytree", msg, OtherEnum))  # someone else's call still shows
    assert tree(_record("torch.utils._pytree", "some other pytree warning"))


@pytest.mark.slow
def test_mtpsd_verbs_print_no_library_noise():
    pytest.importorskip("torchao")
    env_cmd = [sys.executable, "-c", "import torchao"]
    bare = subprocess.run(env_cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    if not any(n in bare.stderr for n in NOISE):
        pytest.skip("this torchao loads all its kernels here: no message to silence")
    proc = subprocess.run(
        [sys.executable, "-m", "mtpsd", "plan-memory", "--config", "config/config.yaml", "--config", "config/paper.yaml",
         "--config", "config/paper_1gpu.yaml", "--run", "qwen3-4b", "--arch", "benchmarks/arch/qwen3_4b.json",
         "--gpus", "1", "--gpu-memory", "80"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "peak per GPU" in proc.stdout
    assert not any(n in proc.stderr for n in NOISE), proc.stderr
