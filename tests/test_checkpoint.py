"""Device and dtype resolution (mtpsd.checkpoint)."""

from __future__ import annotations

import warnings

import pytest
import torch

from mtpsd import checkpoint
from mtpsd.errors import MtpsdError


def test_auto_dtype_per_device():
    assert checkpoint.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert checkpoint.resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(MtpsdError, match="unknown dtype 'fp8'"):
        checkpoint.resolve_dtype("fp8", torch.device("cpu"))


def test_bf16_on_cpu_warns_only_without_native_support(monkeypatch):
    monkeypatch.setattr(checkpoint, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated and slow"):
        assert checkpoint.resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(checkpoint, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checkpoint.resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
