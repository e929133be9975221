"""Build the train/validation/test JSONL files from the ``data:`` config section.

- ``source: synthetic``: ``synthetic.generate_splits`` (disjoint template instances);
- ``source: metamathqa``: MetaMathQA, split train/validation by ``original_question``;
- ``source: gsm8k``: GSM8K train, split train/validation by question;
- ``source: magpie``: the Magpie datasets of ``data.magpie_sources`` (the paper's data
  ablation), split by instruction (``uuid``).

``test_source: gsm8k`` takes the GSM8K test split (``data.test_path`` or the hub);
``test_source: synthetic`` takes the generator's test split. GSM8K test questions are
never used for training (method.md section 5): a training row whose question equals a
test question is an error.
"""

from __future__ import annotations

from pathlib import Path

from mtpsd.config.base import to_dict
from mtpsd.data.loaders import load_gsm8k, load_magpie, load_metamathqa
from mtpsd.data.split import split_by_seed
from mtpsd.data.synthetic import generate_splits
from mtpsd.errors import MtpsdError
from mtpsd.io import atomic_write_json, atomic_write_jsonl, provenance

ROW_FIELDS = ("id", "question", "answer", "seed_id")


def build_splits(cfg) -> dict[str, list[dict]]:
    """``{"train", "validation", "test"}`` rows for the root config ``cfg``."""
    data, seed = cfg.data, cfg.seed
    synth = None
    if data.source == "synthetic" or data.test_source == "synthetic":
        s = data.synthetic
        synth = generate_splits(s.n_train, s.n_validation, s.n_test, seed=seed)
    if data.source == "synthetic":
        train, validation = synth["train"], synth["validation"]
    else:
        if data.source == "magpie":
            rows = load_magpie(data.magpie_sources)
        elif data.source == "metamathqa":
            rows = load_metamathqa(data.path)
        else:
            rows = load_gsm8k(data.path, "train")
        train, validation = split_by_seed(rows, validation_fraction=data.validation_fraction, seed=seed)
    test = synth["test"] if data.test_source == "synthetic" else load_gsm8k(data.test_path, "test")
    if data.max_train_examples is not None:
        train = train[: data.max_train_examples]
    test_questions = {r["question"] for r in test}
    leaked = [r["id"] for r in train + validation if r["question"] in test_questions]
    if leaked:
        raise MtpsdError(f"{len(leaked)} training/validation rows repeat a test question (first: {leaked[0]})")
    clean = lambda rows: [{k: r[k] for k in ROW_FIELDS} for r in rows]  # noqa: E731
    return {"train": clean(train), "validation": clean(validation), "test": clean(test)}


def prepare_data(cfg, *, train: str | Path, validation: str | Path, test: str | Path,
                 stats: str | Path) -> dict:
    """Write the three JSONL files and ``stats`` (sizes, sources, provenance); return stats.

    Everything is built in memory first and each file is written atomically, so a failure
    leaves existing outputs untouched.
    """
    splits = build_splits(cfg)
    for name, rows in splits.items():
        if not rows:
            raise MtpsdError(f"the {name} split is empty; check data.* sizes and files")
    paths = {"train": train, "validation": validation, "test": test}
    for name, rows in splits.items():
        atomic_write_jsonl(paths[name], rows)
    info = {
        "source": cfg.data.source, "test_source": cfg.data.test_source,
        "sizes": {k: len(v) for k, v in splits.items()},
        "seed_ids": {k: len({r["seed_id"] for r in v}) for k, v in splits.items()},
        "files": {k: str(v) for k, v in paths.items()},
        "provenance": provenance(seed=cfg.seed, config=to_dict(cfg.data)),
    }
    atomic_write_json(stats, info)
    return info
