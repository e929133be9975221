"""A numerics fingerprint: a few dozen steps of tiny pretraining and distillation, hashed.

Under pinned numerics (``mtpsd.numerics``) the same code and dependency versions must give
the same loss sequence and the same weights, bit for bit, on every x86-64 machine; the
test suite compares :func:`compute` with the committed ``tests/fixtures/fingerprint.json``.
When the pins or the dependency versions change on purpose, regenerate it with::

    mtpsd fingerprint --out tests/fixtures/fingerprint.json

The run is the tiny default's code path and model size, for few steps (the sizes are fixed, not
read from ``config/config.yaml``, so that editing the default does not move the
fingerprint): tokenizer training on generated problems, from-scratch Llama pretraining
(``mtpsd.pretrain``), ``<MTP>`` insertion, then self-distillation (``mtpsd.train``).
"""

from __future__ import annotations

import hashlib
import platform
import tempfile
from pathlib import Path

PRETRAIN_STEPS = 30
DISTILL_STEPS = 30


def weight_hash(model) -> str:
    """sha256 over every tensor of the state dict (sorted names, raw bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _config():
    from mtpsd.config import resolve

    return resolve({
        "run_names": ["fp"], "runs": {"fp": {}}, "seed": 0,
        "model": {"dtype": "float32",
                  "tiny": {"hidden_size": 96, "num_layers": 4, "intermediate_size": 288},
                  "pretrain": {"steps": PRETRAIN_STEPS, "batch_size": 16, "lr": 3e-3, "warmup_steps": 10}},
        "train": {"k_max": 4, "num_regions": 32, "max_length": 160, "lr": 3e-4, "warmup_steps": 10,
                  "steps": DISTILL_STEPS, "global_batch_size": 16, "micro_batch_size": 16,
                  "checkpoint_every": DISTILL_STEPS, "log_every": 1},
    }, "fp")


def compute(workdir: str | Path | None = None) -> dict:
    """Run the fingerprint; return losses (exact float reprs), weight hashes and the setting."""
    import torch
    import transformers

    from mtpsd import numerics
    from mtpsd.data.synthetic import generate_splits
    from mtpsd.io import atomic_write_jsonl
    from mtpsd.mtp_token import add_mtp_token, save_model_dir
    from mtpsd.pretrain import _train_loop, build_model
    from mtpsd.data.prompts import encode_example
    from mtpsd.tokenizer_train import train_tokenizer
    from mtpsd.training.loop import train_mtp

    cfg = _config()
    rows = generate_splits(400, 0, 0, seed=0)["train"]
    tok = train_tokenizer([r["question"] + "\n\n" + r["answer"] for r in rows], vocab_size=cfg.model.tiny.vocab_size)
    model = build_model(cfg.model.tiny, tok, seed=cfg.seed)
    seqs = [encode_example(tok, r["question"], r["answer"], chat_template=False,
                           max_length=cfg.model.pretrain.max_length) for r in rows]
    pre_losses, _ = _train_loop(model, seqs, cfg.model.pretrain, seed=cfg.seed)
    pre_hash = weight_hash(model)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        add_mtp_token(model, tok, seed=cfg.train.seed)
        save_model_dir(model, tok, root / "mtp_init")
        atomic_write_jsonl(root / "train.jsonl", rows)
        metrics = train_mtp(cfg, init=root / "mtp_init", train_path=root / "train.jsonl",
                            checkpoint_dir=root / "ckpts", out=root / "final", metrics_path=root / "m.jsonl",
                            device="cpu", progress=False)
        final = transformers.AutoModelForCausalLM.from_pretrained(root / "final", dtype=torch.float32)
        distill_hash = weight_hash(final)
    return {
        "pretrain_losses": [repr(x) for x in pre_losses],
        "pretrain_weights_sha256": pre_hash,
        "distill_losses": [repr(r["loss"]) for r in metrics],
        "distill_weights_sha256": distill_hash,
        "setting": {"torch": torch.__version__, "transformers": transformers.__version__,
                    "tokenizers": __import__("tokenizers").__version__, "machine": platform.machine(),
                    "threads": torch.get_num_threads(), "numerics": numerics.describe()},
    }


COMPARED = ("pretrain_losses", "pretrain_weights_sha256", "distill_losses", "distill_weights_sha256")


def differences(expected: dict, got: dict) -> list[str]:
    """Human-readable differences between two fingerprints (empty: identical)."""
    out = []
    for key in COMPARED:
        a, b = expected.get(key), got.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            out.append(f"{key}: first difference at step {first + 1} "
                       f"({a[first] if first < len(a) else '-'} vs {b[first] if first < len(b) else '-'})")
        else:
            out.append(f"{key}: {a} vs {b}")
    return out
