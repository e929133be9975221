"""The GPU acceptance check's driver: every section under one time budget, then ``summary.md``.

    python -m benchmarks.gpu.check [--cpu] [--out DIR] [--budget-s S] [decode_arch options...]

Sections, in order, each a subprocess (a crash or a hung kernel in one cannot take the
others down) with its own deadline: the time left is shared among the sections still to
run in proportion to their weights, so time one section leaves unused goes to the next.
1. ``tests``: the CUDA-only tests (``cuda_tests``);
2. ``decode:<arch>`` per architecture: roofline, then throughput (``decode_arch``);
3. ``train:<arch>`` per architecture: ``benchmarks/train_segment.py`` where that file exists.
Output folder: ``--out``, else ``$OUT``, else ``results/bench/gpu/<gpu-name>/`` (``cpu`` in CPU
mode); it receives at most 8 files: check.json, throughput.json, roofline.json,
train_<arch>.json (one per architecture), summary.md and the shell script's gpu_check.log.

``--cpu``: the same code path with the tiny architectures in float32 and small sizes, in
well under a minute, so the script is known to work before GPU time is spent. Options this
driver does not know are passed to every ``decode_arch`` run (e.g. ``--new-tokens 256``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.gpu import cuda_tests, summary
from benchmarks.gpu.common import (CHECK_JSON, SUMMARY_MD, arch_name, provenance, read_json, slug, train_json,
                                   write_json)

REPO = Path(__file__).resolve().parents[2]
TRAIN_SEGMENT = REPO / "benchmarks" / "train_segment.py"
GPU_ARCHS = ["benchmarks/arch/llama31_8b.json", "benchmarks/arch/qwen3_4b.json"]
CPU_ARCHS = ["benchmarks/arch/tiny_llama.json", "benchmarks/arch/tiny_qwen3.json"]
CPU_DECODE_ARGS = ["--device", "cpu", "--dtype", "float32", "--batches", "1", "16", "64", "--prompt-len", "16",
                   "--new-tokens", "16", "--warmup-tokens", "8", "--reps", "1", "--roofline-max-tokens", "64",
                   "--roofline-kv-len", "32", "--roofline-samples", "2", "--roofline-reps", "2",
                   "--compile-reserve-s", "0", "--threads", "1"]
# Relative shares of the time budget.
WEIGHTS = {"tests": 2.0, "decode0": 3.0, "decode1": 2.0, "train": 1.0}  # tests: real-arch engine cases too
SUMMARY_RESERVE_S = 3.0


def gpu_name() -> str | None:
    """The first GPU's name from nvidia-smi (no CUDA context in this process), else None."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def out_dir(arg: str | None, cpu: bool, device: str) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    return REPO / "results" / "bench" / "gpu" / ("cpu" if cpu else slug(device))


def train_args(cpu: bool) -> list[str]:
    """CPU-mode flags of train_segment.py, whichever spelling it offers."""
    if not cpu:
        return []
    src = TRAIN_SEGMENT.read_text(encoding="utf-8")
    if '"--cpu"' in src:
        return ["--cpu"]
    if '"--device"' in src:
        return ["--device", "cpu"]
    return []


def plan(args) -> list[dict]:
    secs = []
    if "tests" not in args.skip:
        secs.append({"name": "tests", "weight": WEIGHTS["tests"]})
    if "decode" not in args.skip:
        secs += [{"name": f"decode:{arch_name(a)}", "arch": a, "weight": WEIGHTS["decode0" if i == 0 else "decode1"]}
                 for i, a in enumerate(args.archs)]
    if "train" not in args.skip and TRAIN_SEGMENT.is_file():
        secs += [{"name": f"train:{arch_name(a)}", "arch": a, "weight": WEIGHTS["train"]} for a in args.archs]
    return secs


def run_subprocess(cmd: list[str], timeout: float) -> tuple[int | None, bool]:
    """Run with output passed through; ``(returncode, timed_out)``."""
    try:
        proc = subprocess.run(cmd, cwd=REPO, timeout=max(timeout, 1.0))
        return proc.returncode, False
    except subprocess.TimeoutExpired:
        return None, True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="tiny architectures, float32, CPU: the script's own test")
    p.add_argument("--out", default=None, help="output folder (default: $OUT, else results/bench/gpu/<gpu>/)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="whole run, summary included (default 440 on a GPU, 50 in CPU mode)")
    p.add_argument("--archs", nargs="+", default=None, help="HF config.json files (default: Llama-3.1-8B, Qwen3-4B)")
    p.add_argument("--skip", nargs="*", default=[], choices=["tests", "decode", "train"])
    p.add_argument("--train-steps", type=int, default=None, help="training-segment steps (default 6; CPU 2)")
    p.add_argument("--grace-s", type=float, default=20.0, help="a section may overrun its deadline by this much")
    p.add_argument("--print-out-dir", action="store_true", help="print the output folder and exit")
    args, decode_extra = p.parse_known_args(argv)
    if args.print_out_dir:
        print(out_dir(args.out, args.cpu, "cpu" if args.cpu else (gpu_name() or "no GPU found")))
        return 0
    t_start = time.time()
    budget = args.budget_s if args.budget_s is not None else (50.0 if args.cpu else 440.0)
    end = t_start + budget - SUMMARY_RESERVE_S
    args.archs = args.archs or (CPU_ARCHS if args.cpu else GPU_ARCHS)
    device = "cpu" if args.cpu else (gpu_name() or "no GPU found")
    out = out_dir(args.out, args.cpu, device)
    out.mkdir(parents=True, exist_ok=True)
    check = {"mode": "cpu" if args.cpu else "gpu", "device": device,
             "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "budget_s": budget,
             "archs": [arch_name(a) for a in args.archs], "arch_files": args.archs, "decode_args": decode_extra,
             "sections": [], "provenance": provenance()}
    print(f"GPU check: {device}, budget {budget:.0f} s, results in {out}", flush=True)
    secs = plan(args)
    for i, sec in enumerate(secs):
        left = end - time.time()
        share = left * sec["weight"] / sum(s["weight"] for s in secs[i:])
        deadline = time.time() + max(share, 0.0)
        rec = {"name": sec["name"], "allotted_s": share}
        check["sections"].append(rec)
        t0 = time.time()
        print(f"== {sec['name']}: {share:.0f} s", flush=True)
        if share < 1:
            rec.update(status="skipped: no time left", seconds=0.0)
            continue
        if sec["name"] == "tests":
            res = cuda_tests.run(REPO, share, log=print)
            check["tests"] = res
            t = res.get("totals", {})
            rec["status"] = ("timed out" if res.get("timed_out") else "ok") + (
                f" ({t.get('passed', 0)} passed, {t.get('failed', 0)} failed, {t.get('errors', 0)} errors, "
                f"{t.get('skipped', 0)} skipped)")
        elif sec["name"].startswith("decode:"):
            cmd = [sys.executable, "-m", "benchmarks.gpu.decode_arch", "--arch", sec["arch"], "--out-dir", str(out),
                   "--deadline", str(deadline)] + (CPU_DECODE_ARGS if args.cpu else []) + decode_extra
            # a section may overrun its deadline by the grace, never the whole budget
            rc, timed_out = run_subprocess(cmd, min(share + args.grace_s, end - time.time()))
            rec["status"] = "killed at the time limit" if timed_out else ("ok" if rc == 0 else f"failed (rc {rc})")
        else:
            path = out / train_json(arch_name(sec["arch"]))
            steps = args.train_steps or (2 if args.cpu else 6)
            cmd = [sys.executable, str(TRAIN_SEGMENT), "--arch", sec["arch"], "--steps", str(steps), "--out",
                   str(path)] + train_args(args.cpu)
            rc, timed_out = run_subprocess(cmd, share)
            rec["status"] = "killed at the time limit" if timed_out else ("ok" if rc == 0 else f"failed (rc {rc})")
            if not read_json(path):
                write_json(path, {"status": rec["status"], "arch": sec["arch"], "steps": steps})
        rec["seconds"] = time.time() - t0
        check["total_s"] = time.time() - t_start
        write_json(out / CHECK_JSON, check)
    check["total_s"] = time.time() - t_start
    write_json(out / CHECK_JSON, check)
    try:
        path = summary.write(out)
    except Exception as e:  # noqa: BLE001 - the JSON files are the results; say why the table is missing
        path = out / SUMMARY_MD
        path.write_text(f"# GPU acceptance check: {device}\n\nsummary.md could not be written: "
                        f"{type(e).__name__}: {e}\nSee the JSON files beside it.\n", encoding="utf-8")
    print(path.read_text(encoding="utf-8"), flush=True)
    print(f"GPU check done in {check['total_s']:.0f} s: {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
