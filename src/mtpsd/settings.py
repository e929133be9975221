"""Decoding setting names used in file names and result tables.

``static-k{k}``, ``confadapt-tau{tau}`` (k = k_max of the config) and ``verify-k{k}``::

    parse_setting("confadapt-tau0.9", k_max=16) == ("confadapt", 16, 0.9)
    format_setting("static", k=2) == "static-k2"
"""

from __future__ import annotations

import re

from mtpsd.errors import MtpsdError

_RE = re.compile(r"^(static|verify)-k(\d+)$|^confadapt-tau(0?\.\d+|1(?:\.0*)?|0)$")


def parse_setting(setting: str, *, k_max: int = 16) -> tuple[str, int, float]:
    """``"confadapt-tau0.9"`` -> ``("confadapt", k_max, 0.9)``; ``"static-k3"`` -> ``("static", 3, 0.0)``."""
    m = _RE.match(setting)
    if m is None:
        raise MtpsdError(
            f"decoding setting {setting!r}: expected static-k<K>, verify-k<K> or confadapt-tau<TAU>"
        )
    if m.group(1):
        k = int(m.group(2))
        if k < 1:
            raise MtpsdError(f"decoding setting {setting!r}: k must be >= 1")
        return m.group(1), k, 0.0
    return "confadapt", int(k_max), float(m.group(3))


def format_setting(strategy: str, *, k: int | None = None, tau: float | None = None) -> str:
    """Inverse of ``parse_setting`` (tau printed with ``repr``-style shortest form: 0.9, 0.995)."""
    if strategy in ("static", "verify"):
        if k is None or k < 1:
            raise MtpsdError(f"{strategy} setting needs k >= 1, got {k!r}")
        return f"{strategy}-k{int(k)}"
    if strategy == "confadapt":
        if tau is None:
            raise MtpsdError("confadapt setting needs tau")
        return f"confadapt-tau{float(tau)!r}"
    raise MtpsdError(f"unknown strategy {strategy!r}: choose static, confadapt or verify")
