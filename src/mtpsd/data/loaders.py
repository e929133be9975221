"""Loaders for MetaMathQA and GSM8K: hub (``datasets``) or local JSON/JSONL files.

Both return rows in our format ``{"id", "question", "answer", "seed_id"}``; each answer
keeps its source's own format: GSM8K's ends in a ``#### N`` line, MetaMathQA's in
``"The answer is: N"`` (as the paper trained on it; the row also gets ``final`` = N,
normalised: commas, ``$`` and a trailing ``.0`` removed, or the text answer of
MATH-derived LaTeX rows). ``prompts.extract_answer`` reads both endings. Fields are
validated on load; a missing field or malformed line raises ``MtpsdError`` naming the
file, line and field.
"""

from __future__ import annotations

import json
from pathlib import Path

from mtpsd.data.prompts import extract_answer
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
    """One MetaMathQA row -> our row. The response is kept as MetaMathQA wrote it (the paper
    trains on it verbatim: worked solution ending "The answer is: N"); ``final`` holds N,
    normalised, so nothing downstream has to parse it again."""
    _check_text(row, ("query", "response", "original_question"), where)
    response = row["response"].rstrip()
    final = extract_answer(response)
    if final is None:
        if _THE_ANSWER_IS not in response and "####" not in response:
            raise MtpsdError(f"{where}: field 'response' has neither 'The answer is: N' nor '#### N'")
        at = response.rfind(_THE_ANSWER_IS)
        final = response[at + len(_THE_ANSWER_IS):].lstrip(":").strip().rstrip(".") if at >= 0 else ""
        if not final:
            raise MtpsdError(f"{where}: field 'response' has an empty 'The answer is:'")
    return {"id": f"metamath-{index:07d}", "question": row["query"].strip(), "answer": response,
            "final": final, "seed_id": row["original_question"].strip(), "type": row["type"]}


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


# The paper's data ablation (method.md section 4): Magpie-Pro-300K + Magpie-Reasoning-150K.
MAGPIE_DATASETS = ("Magpie-Align/Magpie-Pro-300K-Filtered", "Magpie-Align/Magpie-Reasoning-150K")
MAGPIE_FIELDS = ("conversations",)


def magpie_to_row(row: dict, index: int, where: str, prefix: str) -> dict:
    """One Magpie row -> our row: the first user turn is the question and the assistant turn
    that answers it the answer (``conversations``: ShareGPT turns ``{"from", "value"}``,
    ``human``/``user`` then ``gpt``/``assistant``). ``seed_id`` is the row's ``uuid`` when it
    has one (one row per instruction), else the question."""
    turns = row["conversations"]
    if not isinstance(turns, list) or len(turns) < 2:
        raise MtpsdError(f"{where}: field 'conversations' must be a list of at least 2 turns, got {turns!r}")
    for j, t in enumerate(turns[:2]):
        if not isinstance(t, dict) or "from" not in t or "value" not in t:
            raise MtpsdError(f"{where}: conversations[{j}] must be an object with 'from' and 'value', got {t!r}")
    (user, assistant) = turns[:2]
    if user["from"] not in ("human", "user") or assistant["from"] not in ("gpt", "assistant"):
        raise MtpsdError(f"{where}: conversations must start with a human turn answered by a gpt turn, "
                         f"got {user['from']!r} then {assistant['from']!r}")
    for j, t in enumerate((user, assistant)):
        if not isinstance(t["value"], str) or not t["value"].strip():
            raise MtpsdError(f"{where}: conversations[{j}].value must be a non-empty string")
    question = user["value"].strip()
    return {"id": f"{prefix}-{index:07d}", "question": question, "answer": assistant["value"].strip(),
            "seed_id": str(row.get("uuid") or question)}


def load_magpie(sources: list[str] | tuple[str, ...] = MAGPIE_DATASETS) -> list[dict]:
    """Rows of every Magpie source in order; each source is a hub id (split ``train``) or a
    local ``.json``/``.jsonl`` file (a path that exists, or ends in ``.json``/``.jsonl``)."""
    from pathlib import Path

    if not sources:
        raise MtpsdError("data.magpie_sources: list at least one Magpie dataset (hub id or local file)")
    rows = []
    for s, source in enumerate(sources):
        local = Path(source).exists() or source.endswith((".json", ".jsonl"))
        raw = read_records(source, MAGPIE_FIELDS) if local else _hub(source, None, "train", MAGPIE_FIELDS)
        prefix = f"magpie{s}"
        rows += [magpie_to_row(r, i, f"{source}: row {i + 1}", prefix) for i, r in enumerate(raw)]
    return rows
