"""A training step before and after a change, side by side: step time and host synchronisations.

    python benchmarks/train_step_speed.py --before main --out results/benchmarks/train_step_speed.json

``--before REV``: the library as it was at git revision REV (``git archive REV src``, into a
temporary folder) against the working tree's. Both run ``mtpsd.training.loop.train_mtp`` itself,
each in its own process with one thread, on the same step-0 checkpoint, data and config,
alternating (before, after, before, after, ... ``--rounds`` times) so that load from other work
on the machine falls on both; a step's time is the difference of the metrics rows'
``elapsed_s`` (``log_every: 1``), the first step of a run is left out, and each side reports
the median over all its timed steps. Models (random weights, float32):

- ``tiny``: the tiny default's model (``config/config.yaml``: vocabulary 1024, width 96, 4 layers, tied)
  at its training shape (micro-batch 16 of N = 160, M = 32, k_max 4);
- ``smollm2-2l``: SmolLM2-135M's configuration (vocabulary 49,152, width 576) at depth 2, at the
  paper's shape (micro-batch 8 of N = 160, M = 5, k_max 16): a real vocabulary, where the output
  head is most of the step.

Host synchronisations per optimizer step: the same runs under ``mtpsd.training.host_sync``'s
counter (the working tree's, for both sides), which counts, with the host-side layout building
paused, what would make the host wait for a GPU (see that module); the last step's entry also
holds the logging step's reads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {
    "tiny": dict(arch=dict(vocab_size=1024, hidden_size=96, intermediate_size=288, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
                 train=dict(micro_batch_size=16, global_batch_size=16, max_length=160, num_regions=32, k_max=4)),
    "smollm2-2l": dict(arch="smollm2_135m.json",
                       arch_override=dict(num_hidden_layers=2),
                       train=dict(micro_batch_size=8, global_batch_size=8, max_length=160, num_regions=5, k_max=16)),
}

WORKER = r'''
import json, sys
from mtpsd import numerics
numerics.apply()
import torch
torch.set_num_threads(1)
root, cfg_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
from mtpsd.config import load_resolved
import mtpsd.training.loop as loop
cfg = load_resolved(cfg_path)
out = {"loop": loop.__file__}
if mode == "count":
    sys.path.insert(0, sys.argv[4])
    from count_syncs import install
    state = install(loop)
import tempfile
with tempfile.TemporaryDirectory(dir=root) as run:  # a fresh run: nothing to resume
    rows = loop.train_mtp(cfg, init=root + "/mtp_init", train_path=root + "/train.jsonl", checkpoint_dir=run + "/c",
                          out=run + "/o", metrics_path=run + "/m.jsonl", device="cpu", progress=False)
if mode == "count":
    out["syncs_per_step"] = state["per_step"]
    out["kinds"] = state["kinds"]
else:
    t = [r["elapsed_s"] for r in rows]
    out["step_s"] = [b - a for a, b in zip(t, t[1:])]  # steps 2.. (the first holds warm-up)
print("RESULT " + json.dumps(out))
'''

COUNT_SYNCS = r'''
"""Counting syncs per step in any version of train_mtp (see train_step_speed.py)."""
import collections, dataclasses, importlib.util, sys


def install(loop):
    spec = importlib.util.spec_from_file_location("_host_sync", sys.argv[5])
    hs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hs)
    import mtpsd.layout as L
    state = {"c": None, "per_step": [], "kinds": {}, "opt": None}

    def paused(fn):
        def f(*a, **kw):
            if state["c"] is None:
                return fn(*a, **kw)
            with state["c"].paused():
                return fn(*a, **kw)
        return f

    for name in ("_encode_batch", "sample_batch_layout", "batch_ends", "build_layout", "_step_layouts"):
        if hasattr(loop, name):
            setattr(loop, name, paused(getattr(loop, name)))
    if hasattr(loop, "_to"):  # older versions: a device copy of each layout; host-side counts read the host copy
        device_copies = set()

        def marked(lay, device):
            new = dataclasses.replace(lay)
            device_copies.add(id(new))
            return new

        loop._to = marked
        for name in ("num_terms",):
            real = getattr(L.PackedLayout, name)

            def wrap(self, *a, _real=real, **kw):
                if id(self) in device_copies or state["c"] is None:
                    return _real(self, *a, **kw)
                with state["c"].paused():
                    return _real(self, *a, **kw)
            setattr(L.PackedLayout, name, wrap)
        real_sup = L.PackedLayout.num_supervised

        def sup(self):
            if id(self) in device_copies or state["c"] is None:
                return real_sup.fget(self)
            with state["c"].paused():
                return real_sup.fget(self)
        L.PackedLayout.num_supervised = property(sup)
    real_opt = loop.build_optimizer

    def build_optimizer(*a, **kw):
        state["opt"] = real_opt(*a, **kw)
        return state["opt"]
    loop.build_optimizer = build_optimizer
    real_tqdm = loop.tqdm

    class Bar:
        def __init__(self, *a, **kw):
            self.bar, self.last = real_tqdm(*a, **kw), 0
            state["c"] = hs.HostSyncCounter(optimizers=[state["opt"]], stacks=True).__enter__()

        def update(self, n):
            state["per_step"].append(state["c"].count - self.last)
            self.last = state["c"].count

        def set_postfix(self, **kw):
            pass

        def close(self):
            state["per_step"][-1] += state["c"].count - self.last  # the last step's logging
            state["kinds"] = {f"{w} at {where}": n for (w, where), n in collections.Counter(state["c"].calls).items()}
            state["c"].__exit__(None, None, None)
            state["c"] = None
            self.bar.close()
    loop.tqdm = Bar
    return state
'''


def make_init(root: Path, model: str) -> None:
    """A random-weight step-0 checkpoint of ``model`` with a tokenizer of its vocabulary, and data."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    from mtpsd.data.synthetic import generate_splits
    from mtpsd.io import atomic_write_jsonl
    from mtpsd.mtp_token import add_mtp_token, save_model_dir
    from mtpsd.tokenizer_train import train_tokenizer

    spec = MODELS[model]
    rows = generate_splits(400, 0, 0, seed=0)["train"]
    tok = train_tokenizer([r["question"] + "\n\n" + r["answer"] for r in rows], vocab_size=300)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if isinstance(spec["arch"], dict):
        cfg = LlamaConfig(**spec["arch"], max_position_embeddings=512, **ids)
    else:
        data = json.loads((REPO / "benchmarks" / "arch" / spec["arch"]).read_text())
        cfg = AutoConfig.for_model(**{**data, **spec.get("arch_override", {}), **ids})
    tok.add_tokens([f"<x{i}>" for i in range(cfg.vocab_size - len(tok))])  # every row a real token
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    add_mtp_token(m, tok, seed=0)
    save_model_dir(m, tok, root / "mtp_init")
    atomic_write_jsonl(root / "train.jsonl", rows)


def write_config(root: Path, model: str, steps: int) -> Path:
    from mtpsd.config import Config, ModelConfig, TrainConfig

    train = dict(lr=3e-4, warmup_steps=1, steps=steps, checkpoint_every=10_000, log_every=1, seed=0,
                 **MODELS[model]["train"])
    cfg = Config(model=ModelConfig(dtype="float32"), train=TrainConfig(**train))
    path = root / "cfg.json"
    path.write_text(json.dumps(cfg.to_dict()))
    return path


def run_worker(src: Path, root: Path, cfg: Path, mode: str, helper_dir: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", WORKER, str(root), str(cfg), mode, str(helper_dir),
           str(REPO / "src" / "mtpsd" / "training" / "host_sync.py")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"worker failed ({src}, {mode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[7:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="main", help="git revision of the 'before' side")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first is not timed)")
    p.add_argument("--rounds", type=int, default=2, help="before/after pairs per model")
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    from mtpsd.io import atomic_write_json, provenance

    result = {"before": args.before, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = tmp / "before"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.before, "src"], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        (tmp / "count_syncs.py").write_text(COUNT_SYNCS)
        sides = {"before": old / "src", "after": REPO / "src"}
        for model in args.models:
            root = tmp / model
            root.mkdir()
            make_init(root, model)
            cfg = write_config(root, model, args.steps)
            times = {k: [] for k in sides}
            for _ in range(args.rounds):
                for side, src in sides.items():
                    times[side] += run_worker(src, root, cfg, "time", tmp)["step_s"]
            syncs = {side: run_worker(src, root, cfg, "count", tmp) for side, src in sides.items()}
            med = {k: statistics.median(v) for k, v in times.items()}
            rec = {"step_s_median": med, "step_s": times, "ratio_after_over_before": med["after"] / med["before"],
                   "syncs_per_step": {k: v["syncs_per_step"] for k, v in syncs.items()},
                   "sync_kinds": {k: v["kinds"] for k, v in syncs.items()},
                   "train": MODELS[model]["train"]}
            result["models"][model] = rec
            print(f"{model}: step {med['before']:.3f} s before, {med['after']:.3f} s after "
                  f"(after/before {rec['ratio_after_over_before']:.3f}); host syncs per step "
                  f"{syncs['before']['syncs_per_step']} before, {syncs['after']['syncs_per_step']} after", flush=True)
    result["provenance"] = provenance(seed=0)
    atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
