"""The CUDA-only tests, run by pytest in a subprocess; pass/fail counts per file.

Selected: every test whose id contains ``cuda`` in ``tests/test_flex.py`` (FlexAttention
loss and gradients) and ``tests/test_engine_cuda.py`` (engine equals the reference decoders
in float32 on CUDA) where those files exist. Without CUDA they report as skipped. Counts
come from pytest's JUnit XML; if pytest is stopped by the time limit, from its verbose
output so far (``timed_out: true``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

FILES = ("tests/test_engine_cuda.py", "tests/test_flex.py")  # the engine's first: flex compiles kernels first
SELECT = "cuda"
OUTCOMES = ("passed", "failed", "errors", "skipped")
_VERBOSE = re.compile(r"^(tests/\S+?\.py)::(\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)")
_COLLECT_ERROR = re.compile(r"^ERROR (tests/\S+?\.py)\s*$")


def _empty() -> dict:
    return {o: 0 for o in OUTCOMES} | {"failures": []}


def _from_junit(path: Path, files: list[str]) -> dict:
    per = {f: _empty() for f in files}
    for case in ET.parse(path).getroot().iter("testcase"):
        # a test: classname "tests.test_flex" (or "tests.test_flex.TestX"); a collection error:
        # classname "" and name "tests.test_flex"
        mod = (case.get("classname") or case.get("name") or "").replace(".", "/")
        f = next((f for f in files if mod == f[:-3] or mod.startswith(f[:-3] + "/")), None)
        if f is None:
            continue
        name = f"{f}::{case.get('name')}" if case.get("classname") else f"{f} (collection)"
        bad = next((c for c in case if c.tag in ("failure", "error")), None)
        if bad is not None:
            key = "failed" if bad.tag == "failure" else "errors"
            per[f][key] += 1
            per[f]["failures"].append({"test": name, "message": (bad.get("message") or "")[:400]})
        elif any(c.tag == "skipped" for c in case):
            per[f]["skipped"] += 1
        else:
            per[f]["passed"] += 1
    return per


def _from_verbose(text: str, files: list[str]) -> dict:
    per = {f: _empty() for f in files}
    key = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped",
           "XFAIL": "skipped"}
    for line in text.splitlines():
        m = _VERBOSE.match(line)
        if m and m.group(1) in per:
            per[m.group(1)][key[m.group(3)]] += 1
            if key[m.group(3)] in ("failed", "errors"):
                per[m.group(1)]["failures"].append({"test": f"{m.group(1)}::{m.group(2)}", "message": ""})
        m = _COLLECT_ERROR.match(line)
        if m and m.group(1) in per:
            per[m.group(1)]["errors"] += 1
            per[m.group(1)]["failures"].append({"test": f"{m.group(1)} (collection)", "message": ""})
    return per


def run(repo: Path, timeout_s: float, log=print) -> dict:
    """Run the CUDA tests under ``repo`` for at most ``timeout_s`` seconds; never raises on failure."""
    files = [f for f in FILES if (repo / f).is_file()]
    out: dict = {"files": files, "absent": [f for f in FILES if f not in files], "select": f"-k {SELECT}"}
    if not files:
        return out | {"per_file": {}, "totals": _empty()}
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--continue-on-collection-errors",
               "-k", SELECT, f"--junitxml={junit}", *files]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=max(timeout_s, 1))
            text, rc, timed_out = proc.stdout + proc.stderr, proc.returncode, False
        except subprocess.TimeoutExpired as e:
            text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            rc, timed_out = None, True
        out["seconds"] = time.perf_counter() - t0
        per = _from_junit(junit, files) if junit.is_file() else _from_verbose(text, files)
    log(text[-3000:])
    totals = _empty()
    for counts in per.values():
        for o in OUTCOMES:
            totals[o] += counts[o]
        totals["failures"] += counts["failures"]
    return out | {"returncode": rc, "timed_out": timed_out, "per_file": per, "totals": totals,
                  "output_tail": text[-2000:]}
