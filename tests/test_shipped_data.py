"""The data shipped in data/ (data/README.md): present, unchanged, licensed, and what the offline
overlay reads."""

from __future__ import annotations

import hashlib

from .conftest import DATA, REPO


def test_gsm8k_files_match_their_checksums():
    folder = DATA / "gsm8k"
    sums = dict(line.split()[::-1] for line in (folder / "SHA256SUMS").read_text().splitlines())
    assert sorted(sums) == ["test.jsonl", "train.jsonl"]
    for name, digest in sums.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
        assert digest in (DATA / "README.md").read_text()
    assert "MIT License" in (folder / "LICENSE").read_text()
    assert sum(1 for _ in (folder / "train.jsonl").open()) == 7473
    assert sum(1 for _ in (folder / "test.jsonl").open()) == 1319


def test_offline_overlay_reads_the_shipped_files():
    from mtpsd.config import load_config

    cfg = load_config([REPO / "config" / "config.yaml", REPO / "config" / "smol.yaml",
                       REPO / "config" / "offline.yaml"], run="smol")
    assert (REPO / cfg.data.path).resolve() == (DATA / "gsm8k" / "train.jsonl").resolve()
    assert (REPO / cfg.data.test_path).resolve() == (DATA / "gsm8k" / "test.jsonl").resolve()
