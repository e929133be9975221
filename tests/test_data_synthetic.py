"""Synthetic generator: correct arithmetic, disjoint splits, determinism."""

from __future__ import annotations

import random

import pytest

from mtpsd.data.prompts import extract_answer
from mtpsd.data.synthetic import TEMPLATES, check_arithmetic, generate_splits, sample_problem
from mtpsd.errors import MtpsdError


@pytest.fixture(scope="module")
def splits():
    return generate_splits(3000, 300, 300, seed=7)


def test_every_answer_is_correct_arithmetic(splits):
    rows = [r for v in splits.values() for r in v]
    bad = [(r["id"], check_arithmetic(r["answer"])) for r in rows if check_arithmetic(r["answer"])]
    assert not bad
    for r in rows:
        steps = r["answer"].count("<<")
        assert 2 <= steps <= 4, r["answer"]
        assert r["answer"].splitlines()[-1] == f"#### {extract_answer(r['answer'])}"


def test_checker_catches_wrong_arithmetic():
    assert check_arithmetic("a <<3*4=12>>12\n#### 12") == []
    assert check_arithmetic("a <<3*4=13>>13\n#### 13")
    assert check_arithmetic("a <<3*4=12>>12\n#### 11")
    assert check_arithmetic("a <<3*4=12>>12")


def test_splits_share_no_instance(splits):
    keys = {k: {r["seed_id"] for r in v} for k, v in splits.items()}
    questions = {k: {r["question"] for r in v} for k, v in splits.items()}
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not keys[a] & keys[b]
        assert not questions[a] & questions[b]
    assert {len(v) for v in splits.values()} == {3000, 300}
    assert len(keys["test"]) == 300  # instances unique inside a split too


def test_deterministic_and_seed_dependent():
    a = generate_splits(200, 20, 20, seed=3)
    assert a == generate_splits(200, 20, 20, seed=3)
    assert a["test"] != generate_splits(200, 20, 20, seed=4)["test"]


def test_all_templates_used_and_numbers_small():
    rng = random.Random(0)
    seen = set()
    for _ in range(2000):
        p = sample_problem(rng)
        seen.add(p.key[0])
        assert all(int(n) < 1000 for n in __import__("re").findall(r"\d+", p.answer))
    assert seen == set(TEMPLATES)


def test_too_many_problems_is_a_clear_error(monkeypatch):
    import mtpsd.data.synthetic as synth

    monkeypatch.setattr(synth, "TEMPLATES", {"share": synth._t_share})
    with pytest.raises(MtpsdError, match="n_train"):
        synth.generate_splits(100000, 1, 1, seed=0)
