"""One architecture with random weights: the roofline, then decoding throughput.

    python -m benchmarks.gpu.decode_arch --arch benchmarks/arch/llama31_8b.json --out-dir OUT \
        --deadline EPOCH_S [--device cuda --dtype bfloat16 ...]

The model is built once, directly on the device, and serves every measurement. Results are
merged into ``OUT/roofline.json`` and ``OUT/throughput.json`` under the architecture's name
(the file stem), rewritten as they grow. The engine's mask budget is, by default, the ridge
just measured (``--mask-budget auto``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmarks.gpu import roofline, throughput
from benchmarks.gpu.common import (ROOFLINE_JSON, THROUGHPUT_JSON, Deadline, arch_name, device_name, merge_arch,
                                   n_params, provenance, random_model, resolve_dtype, sync)
from benchmarks.gpu.replay import Replayer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True, help="HF config.json of the architecture (benchmarks/arch/)")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--deadline", type=float, default=None, help="absolute end time (time.time() seconds)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128, help="tokens generated per row (EOS ignored)")
    p.add_argument("--warmup-tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=2, help="timed rounds per batch size")
    p.add_argument("--static-k", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--k-max", type=int, default=16)
    p.add_argument("--tau", type=float, default=0.9)
    p.add_argument("--replay-mean", type=float, default=3.3,
                   help="mean chunk size of the replayed ConfAdapt distribution (paper: 3.3 at tau 0.9)")
    p.add_argument("--chunk-trace", default=None,
                   help="decode JSONL (mtpsd decode output) whose chunk_sizes are replayed instead")
    p.add_argument("--mask-budget", default="auto",
                   help="engine mask budget (tokens per pass): 'auto' = the measured ridge, 'none', or an integer")
    p.add_argument("--no-hf-static", action="store_true", help="skip HF generate with the compiled static cache")
    p.add_argument("--compile-reserve-s", type=float, default=60.0,
                   help="start HF static-cache compilation only with this many seconds left")
    p.add_argument("--roofline-max-tokens", type=int, default=512)
    p.add_argument("--roofline-kv-len", type=int, default=1024)
    p.add_argument("--roofline-samples", type=int, default=5)
    p.add_argument("--roofline-reps", type=int, default=10)
    p.add_argument("--roofline-share", type=float, default=0.2,
                   help="fraction of the time left that the roofline may use (throughput gets the rest)")
    p.add_argument("--no-roofline", action="store_true")
    p.add_argument("--no-throughput", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (CPU mode)")


def mask_budget(arg: str, ridge: int | None) -> int | None:
    if arg == "auto":
        return ridge
    if arg == "none":
        return None
    try:
        return int(arg)
    except ValueError:
        raise SystemExit(f"--mask-budget {arg!r}: 'auto', 'none' or an integer") from None


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    deadline = Deadline(args.deadline if args.deadline is not None else time.time() + 1e9)
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype)
    name = arch_name(args.arch)
    log = lambda s: print(f"[{name}] {s}", flush=True)  # noqa: E731
    t0 = time.perf_counter()
    model = random_model(args.arch, device=device, dtype=dtype)
    sync(device)
    init_s = time.perf_counter() - t0
    common = {"arch": str(args.arch), "params": n_params(model), "dtype": str(dtype), "device": device_name(device),
              "init_s": init_s}
    log(f"{common['params'] / 1e6:.1f} M parameters, built in {init_s:.1f} s on {common['device']}")
    top = {"provenance": provenance()}

    ridge = None
    if not args.no_roofline:
        rl_deadline = deadline.split(args.roofline_share) if not args.no_throughput else deadline
        try:
            rl = roofline.measure(model, batches=args.batches, max_tokens=args.roofline_max_tokens,
                                  kv_len=args.roofline_kv_len, samples=args.roofline_samples, reps=args.roofline_reps,
                                  deadline=rl_deadline, log=log)
        except Exception as e:  # noqa: BLE001 - record it; throughput still runs
            rl = {"errors": [f"{type(e).__name__}: {e}"[:500]]}
            log(f"roofline failed: {rl['errors'][0]}")
        ridge = rl.get("ridge_tokens")
        log(f"ridge: {ridge} tokens per pass (first pass > {roofline.RIDGE_FACTOR}x a 1-token pass)")
        merge_arch(args.out_dir / ROOFLINE_JSON, name, {**common, **rl}, **top)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if not args.no_throughput:
        replayer = (Replayer.from_jsonl(args.chunk_trace) if args.chunk_trace
                    else Replayer.from_distribution(args.replay_mean, args.k_max, rows=max(args.batches)))
        budget = mask_budget(args.mask_budget, ridge)
        block = {**common, "mask_budget_arg": args.mask_budget}

        def save(partial):
            merge_arch(args.out_dir / THROUGHPUT_JSON, name, {**block, **partial}, **top)

        with torch.no_grad():
            tp = throughput.measure(model, batches=args.batches, prompt_len=args.prompt_len,
                                    new_tokens=args.new_tokens, reps=args.reps, warmup_tokens=args.warmup_tokens,
                                    static_ks=args.static_k, k_max=args.k_max, tau=args.tau, mask_budget=budget,
                                    replayer=replayer, hf_static=not args.no_hf_static,
                                    compile_reserve_s=args.compile_reserve_s, deadline=deadline, on_batch=save,
                                    log=log)
        save(tp)
        if device.type == "cuda":
            block["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
            save(tp)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
