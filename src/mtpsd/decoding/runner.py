"""Decode a prompt file with one setting and write the generations (``mtpsd decode``).

Output: ``out`` (JSONL, one row per prompt: id, question, prompt, text, tokens,
chunk_sizes, token_strs (each token decoded alone, for figure 1), per-generation stats) and ``<out stem>.summary.json`` next to it
(pooled statistics, ``mtpsd.decoding.stats``, the engine, and provenance). Decoding runs on
one decoder (``engine``: ``mtpsd.decoding.select``; batch 1, so per-generation times are
single-request latencies). With CUDA graphs every pass shape is captured before the first
timed generation (``DecodeEngine.prepare``); the summary records the capture time apart
(``capture_s``) and the captures that still happened while timing (``graph_captures_timed``: 0).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from mtpsd.checkpoint import load_checkpoint
from mtpsd.decoding.select import decoder_for
from mtpsd.decoding.stats import pooled_stats
from mtpsd.errors import MtpsdError
from mtpsd.io import atomic_write_json, atomic_write_jsonl, provenance, read_jsonl
from mtpsd.vocab import end_token_ids


def summary_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".summary.json")


def _question(row: dict, path, i: int) -> str:
    for key in ("question", "prompt"):
        if isinstance(row.get(key), str):
            return row[key]
    raise MtpsdError(f"{path}: row {i + 1} has no string field 'question' or 'prompt'")


def decode_file(checkpoint: str | Path, prompts: str | Path, out: str | Path, *, strategy: str, k: int,
                tau: float, max_new_tokens: int, chat_template: bool, limit: int | None = None,
                device: str | None = None, dtype: str = "auto", engine: str | None = None,
                convention: str = "project") -> dict:
    """Decode every prompt of ``prompts`` (greedy, batch 1); return the summary written.
    ``convention``: "project" | "authors" (``common.Convention``; the summary has both
    accountings, and without stop strings the authors' never needs an extra pass)."""
    from mtpsd.data.prompts import encode_prompt, format_prompt

    rows = read_jsonl(prompts)
    if limit is not None:
        rows = rows[:limit]
    model, tok = load_checkpoint(checkpoint, dtype=dtype, device=device)
    mtp = getattr(model.config, "mtp_token_id", None)
    stop_ids = end_token_ids(model, tok)
    questions = [_question(row, prompts, i) for i, row in enumerate(rows)]
    encoded = [encode_prompt(tok, q, chat_template=chat_template) for q in questions]
    longest = max((len(e) for e in encoded), default=0)
    seq_len = max(longest + max_new_tokens + 2 * k, 1)
    decoder = decoder_for(model, mtp, engine=engine, batch=1, seq_len=seq_len)
    captured = decoder.prepare(batch=1, strategy=strategy, k=k, seq_len=seq_len,
                               convention=convention)  # before any timing
    capture_s = decoder.counters["capture_s"]
    out_rows, results = [], []
    for i, row in enumerate(tqdm(rows, desc=f"decode {strategy} k={k}", unit="prompt")):
        question = questions[i]
        text = format_prompt(tok, question, chat_template=chat_template)
        res = decoder.generate([encoded[i]], strategy=strategy, k=k, tau=tau, max_new_tokens=max_new_tokens,
                              stop_token_ids=stop_ids or None, tokenizer=tok, convention=convention)[0]
        results.append(res)
        out_rows.append({"id": row.get("id", i), "question": question, "prompt": text,
                         **res.to_dict(), "token_strs": [tok.decode([t]) for t in res.tokens]})
    atomic_write_jsonl(out, out_rows)
    summary = {
        "checkpoint": str(checkpoint), "prompts": str(prompts), "strategy": strategy, "k": k,
        "tau": tau if strategy == "confadapt" else None, "max_new_tokens": max_new_tokens,
        "chat_template": chat_template, "engine": decoder.mode, "convention": convention, "graph_captures": captured,
        "graph_captures_timed": decoder.counters["graph_captures"] - captured, "capture_s": capture_s,
        **pooled_stats(results),
        "provenance": provenance(device=str(model.device), dtype=str(next(model.parameters()).dtype),
                                 torch_threads=torch.get_num_threads()),
    }
    atomic_write_json(summary_path(out), summary)
    return summary
