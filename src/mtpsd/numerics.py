"""Pinned CPU numerics: the same weights and numbers on every x86-64 machine.

Trained weights depend on which CPU code path the math libraries pick (MKL's AVX-512 vs
AVX2 kernels, ATen's vectorised kernels, oneDNN). After thousands of steps such differences
become a different model, so the default's headline could flip from one machine to the
next. ``numerics.env`` beside this file pins all of them; it is the only place they are set:

- the Makefile includes it (``make reproduce``, ``make test`` export it);
- ``mtpsd`` (every rule of the DAG) and the test suite call :func:`apply` before torch is
  imported.

The thread count is free: under the pins it does not change the tiny path's weights
(``numerics.env`` says what was measured), so the workflow shares the cores out among
trainings that run side by side.

``MTPSD_NUMERICS=native`` turns pinning off (faster on AVX-512/AMX CPUs, but numbers then
depend on the machine). Environment variables already set by the caller win over the file
(so ``make`` and a user's explicit choice are respected).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_FILE = Path(__file__).with_name("numerics.env")
SWITCH = "MTPSD_NUMERICS"


def pinned_env() -> dict[str, str]:
    """``KEY=VALUE`` lines of ``numerics.env`` (comments and blanks skipped)."""
    out = {}
    for line in ENV_FILE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def enabled(environ=None) -> bool:
    """Whether pinned numerics are on (``MTPSD_NUMERICS`` unset or ``pinned``)."""
    value = (os.environ if environ is None else environ).get(SWITCH, "pinned")
    if value not in ("pinned", "native"):
        raise ValueError(f"{SWITCH}={value!r}: use 'pinned' (default) or 'native'")
    return value == "pinned"


def apply(environ=None) -> dict[str, str]:
    """Set the pinned variables in ``environ`` (default ``os.environ``) where unset.

    Must run before torch is imported: MKL, ATen and oneDNN read them once, at start-up.
    Returns the variables that were set; with pinning off, sets nothing.
    """
    environ = os.environ if environ is None else environ
    if not enabled(environ):
        return {}
    if environ is os.environ and "torch" in sys.modules:
        missing = [k for k in pinned_env() if k not in os.environ]
        if missing:
            import warnings

            warnings.warn(f"pinned numerics applied after torch was imported: {', '.join(missing)} "
                          "may not take effect", stacklevel=2)
    added = {k: v for k, v in pinned_env().items() if k not in environ}
    environ.update(added)
    return added


def describe() -> dict:
    """What is in force, for provenance: the switch and each pinned variable's value."""
    return {"mode": "pinned" if enabled() else "native",
            **{k: os.environ.get(k) for k in pinned_env()}}
