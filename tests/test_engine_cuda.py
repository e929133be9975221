"""DecodeEngine on CUDA with captured graphs: equals the DynamicCache reference in float32, and
graph replay equals the same engine run eagerly (bf16, bit for bit). Skipped without CUDA; needs
only torch, transformers and pytest (the GPU machine has no lm_eval, datasets or snakemake)."""

from __future__ import annotations

import pytest
import torch

from mtpsd.decoding.engine import DecodeEngine
from tests.test_engine import MTP, PROMPTS, SETTINGS, check_equal, make_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("strategy,k,tau", SETTINGS)
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_cuda_graph_engine_equals_reference_fp32(arch, strategy, k, tau):
    model = make_model(arch, dtype=torch.float32, device="cuda")
    eng, _ = check_equal(model, strategy, k, tau, pad=True, cuda_graphs=True)
    assert eng.cuda_graphs, "graph capture failed and the engine fell back to eager"
    assert eng.counters["graph_captures"] > 0 and eng.counters["graph_replays"] > eng.counters["graph_captures"]


@pytest.mark.parametrize("strategy,k,tau", [("static", 1, 0.0), ("static", 3, 0.0), ("confadapt", 8, 0.3),
                                            ("verify", 4, 0.0)])
def test_graph_replay_equals_eager_bf16(strategy, k, tau):
    model = make_model("llama", dtype=torch.bfloat16, device="cuda", scale=4.0)
    kw = dict(strategy=strategy, k=k, tau=tau, max_new_tokens=40, stop_token_ids=())
    graphs = DecodeEngine(model, mtp_token_id=MTP, max_batch_size=8, max_seq_len=256, cuda_graphs=True)
    eager = DecodeEngine(model, mtp_token_id=MTP, max_batch_size=8, max_seq_len=256, cuda_graphs=False,
                         pad_shapes=True)
    got, want = graphs.generate(PROMPTS, **kw), eager.generate(PROMPTS, **kw)
    assert [(g.tokens, g.chunk_sizes) for g in got] == [(w.tokens, w.chunk_sizes) for w in want]
    captures = graphs.counters["graph_captures"]
    again = graphs.generate(PROMPTS, **kw)  # reuse: same shapes, no new capture
    assert [g.tokens for g in again] == [g.tokens for g in got]
    assert graphs.counters["graph_captures"] == captures > 0
