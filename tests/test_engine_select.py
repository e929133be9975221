"""Which decoder runs (``mtpsd.decoding.select``): graphs / eager / reference, from the config key,
the CLI flag or ``MTPSD_ENGINE``; every path decodes the same tokens and records its name."""

from __future__ import annotations

import pytest

from mtpsd.decoding import generate_batch
from mtpsd.decoding.select import ENV, resolve_engine
from mtpsd.errors import MtpsdError
from tests.test_engine import MTP, PROMPTS, make_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resolution_order(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert resolve_engine("auto", "cpu") == resolve_engine(None, "cpu") == "eager"
    assert resolve_engine("auto", "cuda") == "graphs"
    monkeypatch.setenv(ENV, "reference")
    assert resolve_engine("auto", "cuda") == "reference"  # the environment decides for "auto"
    assert resolve_engine("eager", "cuda") == "eager"  # an explicit choice wins
    with pytest.raises(MtpsdError, match="CUDA graphs need a CUDA device"):
        resolve_engine("graphs", "cpu")
    monkeypatch.setenv(ENV, "fast")
    with pytest.raises(MtpsdError, match="MTPSD_ENGINE='fast'"):
        resolve_engine("auto", "cpu")


@pytest.mark.parametrize("strategy,k", [("static", 3), ("confadapt", 5), ("verify", 4)])
def test_every_engine_decodes_the_same(strategy, k, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    m = make_model("qwen3")
    kw = dict(mtp_token_id=MTP, strategy=strategy, k=k, tau=0.6, max_new_tokens=16, stop_token_ids=())
    runs = {e: generate_batch(m, PROMPTS, engine=e, **kw) for e in ("eager", "reference")}
    monkeypatch.setenv(ENV, "reference")
    runs["env"] = generate_batch(m, PROMPTS, **kw)
    assert {r.extras["engine"] for r in runs["eager"]} == {"eager"}
    assert {r.extras["engine"] for r in runs["env"]} == {"reference"}
    want = [(r.tokens, r.chunk_sizes) for r in runs["reference"]]
    assert [(r.tokens, r.chunk_sizes) for r in runs["eager"]] == want == [(r.tokens, r.chunk_sizes)
                                                                           for r in runs["env"]]


def test_reference_engine_refuses_engine_only_features():
    from mtpsd.decoding.select import decoder_for

    m = make_model("llama")
    with pytest.raises(MtpsdError, match="mask budget"):
        decoder_for(m, MTP, engine="reference", batch=1, seq_len=64, mask_budget=8)
    dec = decoder_for(m, MTP, engine="reference", batch=1, seq_len=64)
    with pytest.raises(MtpsdError, match="accept_fn"):
        dec.generate([[1, 2]], strategy="confadapt", k=3, accept_fn=lambda r, s, n: 1)


def test_config_key_and_cli_flags():
    from mtpsd.cli import build_parser
    from mtpsd.config import load_config, merge_sources, resolve
    from mtpsd.config.base import ConfigError

    assert load_config(["config/config.yaml"]).decode.engine == "auto"
    for verb in ("decode", "evaluate"):
        sub = build_parser(verb)._subparsers._group_actions[0].choices[verb]
        flag = next(a for a in sub._actions if "--engine" in a.option_strings)
        assert set(flag.choices) == {"auto", "graphs", "eager", "reference"}
    raw = merge_sources(["config/config.yaml"])
    raw["decode"]["engine"] = "fast"
    with pytest.raises(ConfigError, match="decode.engine"):
        resolve(raw)
