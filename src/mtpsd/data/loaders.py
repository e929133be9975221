"""Loaders for MetaMathQA and GSM8K: hub (``datasets``) or local JSON/JSONL files.

Both return rows in our format ``{"id", "question", "answer", "seed_id"}`` with the
answer ending in a ``#### N`` line, so one extractor (``prompts.extract_answer``) serves
every source. Fields are validated on load; a missing field or malformed line raises
``MtpsdError`` naming the file, line and field.

MetaMathQA responses end in ``"The answer is: N"``; we keep the response and append
``"#### N"`` (N normalised: commas, ``$`` and a trailing ``.0`` removed). Rows whose final
answer is not a plain number (MATH-derived LaTeX answers) keep their text answer after
``####`` so nothing is silently dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

from mtpsd.data.prompts import normalize_number
from mtpsd.errors import MtpsdError
from mtpsd.io import read_jsonl

METAMATH_FIELDS = ("query", "response", "type", "original_question")
GSM8K_FIELDS = ("question", "answer")
_THE_ANSWER_IS = "The answer is"


def read_records(path: str | Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of a local ``.jsonl`` (one object per line) or ``.json`` (a list of objects)."""
    path = Path(path)
    if not path.is_file():
        raise MtpsdError(f"{path}: file not found")
    if path.suffix != ".json":
        return read_jsonl(path, required=required)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MtpsdError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, list):
        raise MtpsdError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise MtpsdError(f"{path}: item {i}: expected an object, got {type(row).__name__}")
        missing = [k for k in required if k not in row]
        if missing:
            raise MtpsdError(f"{path}: item {i}: missing field(s) {', '.join(map(repr, missing))}")
    return data


def _hub(name: str, config: str | None, split: str, required: tuple[str, ...]) -> list[dict]:
    """Rows of a hub dataset split; fails clearly offline or when a field is missing."""
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - hub/network errors come in many types
        raise MtpsdError(
            f"could not load hub dataset {name!r} (config {config!r}, split {split!r}): {e}. "
            "Offline? Set data.path / data.test_path to a local JSONL file."
        ) from None
    missing = [k for k in required if k not in ds.column_names]
    if missing:
        raise MtpsdError(f"hub dataset {name!r}: missing field(s) {', '.join(map(repr, missing))}")
    return [dict(r) for r in ds]


def _check_text(row: dict, fields: tuple[str, ...], where: str) -> None:
    for k in fields:
        if not isinstance(row[k], str) or not row[k].strip():
            raise MtpsdError(f"{where}: field {k!r} must be a non-empty string, got {row[k]!r}")


def metamath_to_row(row: dict, index: int, where: str) -> dict:
    """One MetaMathQA row -> our row; the response gains a final ``#### N`` line."""
    _check_text(row, ("query", "response", "original_question"), where)
    response = row["response"].rstrip()
    at = response.rfind(_THE_ANSWER_IS)  # the last statement is the final answer
    if at < 0 and "####" not in response:
        raise MtpsdError(f"{where}: field 'response' has neither 'The answer is: N' nor '#### N'")
    if at >= 0:
        final = response[at + len(_THE_ANSWER_IS):].lstrip(":").strip().rstrip(".")
        if not final:
            raise MtpsdError(f"{where}: field 'response' has an empty 'The answer is:'")
        response = f"{response}\n#### {normalize_number(final) or final}"
    return {"id": f"metamath-{index:07d}", "question": row["query"].strip(), "answer": response,
            "seed_id": row["original_question"].strip(), "type": row["type"]}


def load_metamathqa(path: str | None) -> list[dict]:
    """MetaMathQA (hub ``meta-math/MetaMathQA`` when ``path`` is None) as our rows."""
    where = str(path) if path else "meta-math/MetaMathQA"
    raw = read_records(path, METAMATH_FIELDS) if path else _hub("meta-math/MetaMathQA", None, "train",
                                                                 METAMATH_FIELDS)
    return [metamath_to_row(r, i, f"{where}: row {i + 1}") for i, r in enumerate(raw)]


def load_gsm8k(path: str | None, split: str) -> list[dict]:
    """GSM8K ``split`` (hub ``openai/gsm8k`` config ``main`` when ``path`` is None) as our rows.

    GSM8K answers already end in ``#### N``; ``seed_id`` is the question (one row each).
    """
    where = str(path) if path else f"openai/gsm8k:{split}"
    raw = read_records(path, GSM8K_FIELDS) if path else _hub("openai/gsm8k", "main", split, GSM8K_FIELDS)
    rows = []
    for i, r in enumerate(raw):
        _check_text(r, GSM8K_FIELDS, f"{where}: row {i + 1}")
        if "####" not in r["answer"]:
            raise MtpsdError(f"{where}: row {i + 1}: field 'answer' has no '#### N' line")
        rows.append({"id": f"gsm8k-{split}-{i:05d}", "question": r["question"].strip(),
                     "answer": r["answer"].strip(), "seed_id": r["question"].strip()})
    return rows
