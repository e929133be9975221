"""Loaders, seed-stratified split and prepare-data: clear errors, no leakage, atomic output."""

from __future__ import annotations

import json

import pytest

from mtpsd.cli import main
from mtpsd.data.loaders import load_gsm8k, load_metamathqa
from mtpsd.data.prompts import extract_answer
from mtpsd.data.split import split_by_seed
from mtpsd.errors import MtpsdError


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _metamath_rows(n_seeds=20, per_seed=3):
    return [{"query": f"Q{s} variant {v}?", "response": f"Step.\nThe answer is: {s},000",
             "type": "GSM_Rephrased", "original_question": f"seed {s}"}
            for s in range(n_seeds) for v in range(per_seed)]


def test_split_by_seed_no_leakage_and_deterministic():
    rows = [{"id": i, "seed_id": f"s{i % 37}"} for i in range(500)]
    tr, va = split_by_seed(rows, validation_fraction=0.1, seed=1)
    assert len(tr) + len(va) == 500
    assert not {r["seed_id"] for r in tr} & {r["seed_id"] for r in va}
    assert len({r["seed_id"] for r in va}) == 4  # round(0.1 * 37)
    assert (tr, va) == split_by_seed(rows, validation_fraction=0.1, seed=1)
    _, va_rev = split_by_seed(rows[::-1], validation_fraction=0.1, seed=1)  # order-independent
    assert {r["seed_id"] for r in va_rev} == {r["seed_id"] for r in va}
    assert va != split_by_seed(rows, validation_fraction=0.1, seed=2)[1]


def test_metamathqa_local_jsonl_and_json(tmp_path):
    rows = _metamath_rows()
    out = load_metamathqa(str(_write_jsonl(tmp_path / "mm.jsonl", rows)))
    assert len(out) == 60 and out[0]["seed_id"] == "seed 0"
    # MetaMathQA answers keep their own format (the paper trains on them verbatim)
    assert out[5]["answer"] == rows[5]["response"].rstrip() and out[5]["answer"].endswith("The answer is: 1,000")
    assert "####" not in out[5]["answer"]
    assert extract_answer(out[5]["answer"]) == out[5]["final"] == "1000"
    (tmp_path / "mm.json").write_text(json.dumps(rows))
    assert load_metamathqa(str(tmp_path / "mm.json")) == out


@pytest.mark.parametrize("content,match", [
    ('{"query": "q", "response": "r"}\n', r"mm\.jsonl:1: missing field\(s\) 'type', 'original_question'"),
    ('{"query": "q", "response": "The answer is: 1", "type": "t", "original_question": "o"}\n{bad\n',
     r"mm\.jsonl:2: malformed JSON"),
    ('{"query": "q", "response": "no final answer", "type": "t", "original_question": "o"}\n',
     r"row 1: field 'response' has neither"),
    ('{"query": "", "response": "The answer is: 1", "type": "t", "original_question": "o"}\n',
     r"row 1: field 'query' must be a non-empty string"),
])
def test_metamathqa_errors_name_file_line_field(tmp_path, content, match):
    (tmp_path / "mm.jsonl").write_text(content)
    with pytest.raises(MtpsdError, match=match):
        load_metamathqa(str(tmp_path / "mm.jsonl"))


def test_missing_path_is_clear(tmp_path):
    with pytest.raises(MtpsdError, match="nope.jsonl: file not found"):
        load_gsm8k(str(tmp_path / "nope.jsonl"), "train")


def test_gsm8k_shared_file(gsm8k_dir):
    rows = load_gsm8k(str(gsm8k_dir / "test.jsonl"), "test")
    assert len(rows) == 1319
    assert extract_answer(rows[0]["answer"]) == "18"
    assert all(extract_answer(r["answer"]) is not None for r in rows)


def _config(tmp_path, data):
    from mtpsd.config import resolve

    cfg = resolve({"data": data, "run_names": ["t"], "runs": {"t": {}}}).to_dict()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _prepare(tmp_path, cfg):
    d = tmp_path / "data"
    return main(["prepare-data", "--config", str(cfg), "--train", str(d / "train.jsonl"),
                 "--validation", str(d / "validation.jsonl"), "--test", str(d / "test.jsonl"),
                 "--stats", str(d / "stats.json")]), d


def test_prepare_data_synthetic_cli(tmp_path):
    cfg = _config(tmp_path, {"synthetic": {"n_train": 300, "n_validation": 30, "n_test": 20}})
    rc, d = _prepare(tmp_path, cfg)
    assert rc == 0
    rows = [json.loads(x) for x in (d / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 300 and set(rows[0]) == {"id", "question", "answer", "seed_id"}
    stats = json.loads((d / "stats.json").read_text())
    assert stats["sizes"] == {"train": 300, "validation": 30, "test": 20} and "provenance" in stats


def test_prepare_data_metamath_gsm8k_and_failure_keeps_outputs(tmp_path, gsm8k_dir):
    mm = _write_jsonl(tmp_path / "mm.jsonl", _metamath_rows(50, 2))
    cfg = _config(tmp_path, {"source": "metamathqa", "path": str(mm), "test_source": "gsm8k",
                             "test_path": str(gsm8k_dir / "test.jsonl"), "validation_fraction": 0.2})
    rc, d = _prepare(tmp_path, cfg)
    assert rc == 0
    tr = [json.loads(x) for x in (d / "train.jsonl").read_text().splitlines()]
    va = [json.loads(x) for x in (d / "validation.jsonl").read_text().splitlines()]
    assert len(va) == 20 and len(tr) == 80
    assert not {r["seed_id"] for r in tr} & {r["seed_id"] for r in va}
    before = (d / "train.jsonl").read_text()
    mm.write_text('{"query": 1}\n')
    rc, _ = _prepare(tmp_path, cfg)
    assert rc == 2  # MtpsdError -> exit 2, existing outputs untouched
    assert (d / "train.jsonl").read_text() == before


def _magpie_rows(n, tag):
    return [{"uuid": f"{tag}-{i}", "instruction": f"{tag} task {i}?",
             "conversations": [{"from": "human", "value": f"{tag} task {i}?"},
                               {"from": "gpt", "value": f"Answer {i}."}]} for i in range(n)]


def test_magpie_local_files_both_datasets_in_order(tmp_path):
    from mtpsd.data.loaders import load_magpie

    pro = _write_jsonl(tmp_path / "pro.jsonl", _magpie_rows(3, "pro"))
    reasoning = tmp_path / "reasoning.json"
    reasoning.write_text(json.dumps(_magpie_rows(2, "reason")), encoding="utf-8")
    rows = load_magpie([str(pro), str(reasoning)])
    assert [r["question"] for r in rows] == ["pro task 0?", "pro task 1?", "pro task 2?",
                                             "reason task 0?", "reason task 1?"]
    assert rows[0] == {"id": "magpie0-0000000", "question": "pro task 0?", "answer": "Answer 0.",
                       "seed_id": "pro-0"}
    assert rows[3]["id"] == "magpie1-0000000"


@pytest.mark.parametrize("row,pattern", [
    ({"instruction": "x"}, r"missing field\(s\) 'conversations'"),
    ({"conversations": [{"from": "human", "value": "q"}]}, "at least 2 turns"),
    ({"conversations": [{"from": "human"}, {"from": "gpt", "value": "a"}]}, r"conversations\[0\].*'from' and 'value'"),
    ({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}, "human turn answered"),
    ({"conversations": [{"from": "human", "value": " "}, {"from": "gpt", "value": "a"}]}, "non-empty"),
])
def test_magpie_bad_rows_name_file_row_and_field(tmp_path, row, pattern):
    from mtpsd.data.loaders import load_magpie

    path = _write_jsonl(tmp_path / "m.jsonl", [row])
    with pytest.raises(MtpsdError, match=pattern) as e:
        load_magpie([str(path)])
    assert "m.jsonl" in str(e.value)


def test_prepare_data_magpie_source_splits_by_instruction(tmp_path):
    from mtpsd.config import resolve
    from mtpsd.data.prepare import build_splits

    pro = _write_jsonl(tmp_path / "pro.jsonl", _magpie_rows(40, "pro"))
    cfg = resolve({"run_names": ["m"], "runs": {"m": {}},
                   "data": {"source": "magpie", "magpie_sources": [str(pro)], "test_source": "synthetic",
                            "validation_fraction": 0.1, "synthetic": {"n_train": 10, "n_validation": 5, "n_test": 5}}},
                  "m")
    splits = build_splits(cfg)
    assert (len(splits["train"]), len(splits["validation"])) == (36, 4)
    assert {r["question"] for r in splits["train"]}.isdisjoint({r["question"] for r in splits["validation"]})
