"""MTPLM: generate_until routes through mtpsd.decoding, honours until/max_gen_toks; decode_stats."""

from __future__ import annotations

import math

import pytest
import torch
from lm_eval.api.instance import Instance

from mtpsd.decoding import generate
from mtpsd.evaluation.lm_eval_adapter import MTPLM
from tests.conftest import make_char_tokenizer

MTP = 63
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,:?\n!;"  # 60 chars: ids 3..62


def char_tokenizer():
    """Character-level tokenizer: <pad>=0, <s>=1, </s>=2, then one id per char; <MTP>=63."""
    return make_char_tokenizer(CHARS, add_bos=False)


@pytest.fixture
def lm_setup(tiny_llama):
    torch.set_num_threads(1)
    model = tiny_llama(seed=3)
    model.generation_config.eos_token_id = 2
    return model, char_tokenizer()


def request(ctx: str, **gen_kwargs) -> Instance:
    return Instance(request_type="generate_until", doc={}, arguments=(ctx, gen_kwargs), idx=0)


def greedy_text(model, tok, ctx: str, n: int) -> tuple[str, list[int]]:
    ids = tok(ctx, return_tensors="pt").input_ids
    res = generate(model, ids, mtp_token_id=MTP, strategy="static", k=1, max_new_tokens=n, stop_token_ids=(2,))
    return tok.decode(res.tokens, skip_special_tokens=True), res.tokens


@pytest.mark.parametrize("batch_size", [1, 3])
def test_generate_until_equals_greedy(lm_setup, batch_size):
    model, tok = lm_setup
    lm = MTPLM(pretrained=model, tokenizer=tok, strategy="static", k=1, batch_size=batch_size, max_gen_toks=24)
    ctxs = ["Q: abc?", "Hello there", "xyz"]
    out = lm.generate_until([request(c, until=[], do_sample=False) for c in ctxs])
    expected = [greedy_text(model, tok, c, 24)[0] for c in ctxs]
    assert out == expected
    assert all(len(t) > 0 for t in out)


def test_until_and_max_gen_toks(lm_setup):
    model, tok = lm_setup
    lm = MTPLM(pretrained=model, tokenizer=tok, strategy="verify", k=3, batch_size=1, max_gen_toks=30)
    full, _ = greedy_text(model, tok, "Q: abc?", 30)
    stop = full[8:10]
    out = lm.generate_until([request("Q: abc?", until=[stop]), request("Q: abc?", until=[], max_gen_toks=5)])
    assert out[0] == full[: full.index(stop)]
    assert out[1] == greedy_text(model, tok, "Q: abc?", 5)[0]
    r = lm.results
    assert r[0].stopped_by == "stop_string" and len(r[1].tokens) <= 5


@pytest.mark.parametrize("engine", ["auto", "reference"])
def test_decode_stats(lm_setup, engine):
    model, tok = lm_setup
    lm = MTPLM(pretrained=model, tokenizer=tok, strategy="static", k=3, batch_size=1, max_gen_toks=10, engine=engine)
    lm.generate_until([request(c, until=[]) for c in ("abc", "Hello")])
    s = lm.decode_stats()
    assert s["engine"] == ("eager" if engine == "auto" else "reference")
    chunks = [c for cs in s["chunk_sizes"] for c in cs]
    assert s["n_generations"] == 2 and len(s["chunk_sizes"]) == 2
    assert s["tokens"] == sum(chunks) == sum(len(r.tokens) for r in lm.results)
    assert s["forward_passes"] == len(chunks)
    assert s["eff_k_mean"] == pytest.approx(s["tokens"] / s["forward_passes"])
    mean = sum(chunks) / len(chunks)
    assert s["eff_k_sd"] == pytest.approx(math.sqrt(sum((c - mean) ** 2 for c in chunks) / (len(chunks) - 1)))
    wall = sum(r.wall_time_s for r in lm.results)
    assert s["tokens_per_s"] == pytest.approx(s["tokens"] / wall)
    assert max(chunks) == 3


def test_sampling_refused(lm_setup):
    from mtpsd.errors import MtpsdError

    model, tok = lm_setup
    lm = MTPLM(pretrained=model, tokenizer=tok, strategy="static", k=1, batch_size=1)
    with pytest.raises(MtpsdError, match="greedily"):
        lm.generate_until([request("abc", until=[], do_sample=True, temperature=0.7)])


def test_registered():
    from lm_eval.api.registry import get_model

    assert get_model("mtpsd") is MTPLM


def test_decode_cli_writes_rows_and_summary(lm_setup, tmp_path):
    """`mtpsd decode` on a saved tiny checkpoint: one row per prompt, pooled summary with provenance."""
    import json

    from mtpsd.cli import main

    model, tok = lm_setup
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "question": q}) + "\n" for i, q in enumerate(["abc", "Hi", "xy"])))
    out = tmp_path / "decode" / "static-k2.jsonl"
    rc = main(["decode", "--checkpoint", str(ckpt), "--prompts", str(prompts), "--strategy", "static", "--k", "2",
               "--max-new-tokens", "9", "--limit", "2", "--dtype", "float64", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question"] for r in rows] == ["abc", "Hi"]
    for r in rows:
        ids = tok(r["prompt"], return_tensors="pt").input_ids
        ref = generate(model, ids, mtp_token_id=MTP, strategy="static", k=2, max_new_tokens=9, stop_token_ids=(2,))
        assert r["tokens"] == ref.tokens and r["chunk_sizes"] == ref.chunk_sizes
        assert len(r["token_strs"]) == len(r["tokens"])
    summary = json.loads((tmp_path / "decode" / "static-k2.summary.json").read_text())
    assert summary["tokens"] == sum(len(r["tokens"]) for r in rows) and "provenance" in summary
    assert summary["engine"] == "eager" and summary["graph_captures_timed"] == 0
    ref_out = tmp_path / "decode" / "ref.jsonl"  # the way out: the reference decoder, same generations
    assert main(["decode", "--checkpoint", str(ckpt), "--prompts", str(prompts), "--strategy", "static", "--k", "2",
                 "--max-new-tokens", "9", "--limit", "2", "--dtype", "float64", "--device", "cpu",
                 "--engine", "reference", "--out", str(ref_out)]) == 0
    assert [json.loads(line)["tokens"] for line in ref_out.read_text().splitlines()] == [r["tokens"] for r in rows]
    assert json.loads((tmp_path / "decode" / "ref.summary.json").read_text())["engine"] == "reference"
    assert main(["decode", "--checkpoint", str(tmp_path), "--prompts", str(prompts), "--out", str(out)]) == 2
