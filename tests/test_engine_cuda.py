"""DecodeEngine on CUDA with real CUDA graphs (the GPU check runs these; skipped without CUDA):

- float32: captured graphs equal the DynamicCache reference token for token and chunk for
  chunk, at real-sized ids (vocabulary 4096, ``<MTP>`` 4000), 5 prompts (not a power of two)
  stopping at different times, causal and bidirectional; and the real Llama-3.1-8B /
  Qwen3-4B configs at 2 layers (vocabularies 128384 / 151936, ``<MTP>`` 128259 / 151669);
- graphs against eager and against the reference with real CUDA graphs, emulator-free;
- bf16: a real replay equals the same padded passes run eagerly (the CPU emulator's replay on
  CUDA) bit for bit, and capture time and pool memory are recorded.
Needs only torch, transformers and pytest (the GPU machine has no lm_eval, datasets or snakemake).
"""

from __future__ import annotations

import pytest
import torch

from mtpsd.decoding.engine import DecodeEngine
from tests.graph_emulator import EmulatedGraphs
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
    eng, _ = check_equal(model, strategy, k, tau, mode="graphs")
    assert eng.backend.name == "cuda" and eng.counters["graph_replays"] > eng.counters["graph_captures"] > 0


@pytest.mark.parametrize("strategy,k,tau", [("static", 3, 0.0), ("confadapt", 6, 0.5), ("verify", 4, 0.0)])
def test_cuda_graph_bidirectional_equals_reference_fp32(strategy, k, tau):
    model = make_model("qwen3", seed=1, dtype=torch.float32, device="cuda")
    model.config.mtp_attention = "bidirectional"
    check_equal(model, strategy, k, tau, mode="graphs")


@pytest.mark.parametrize("name", ["llama31_8b", "qwen3_4b"])
def test_cuda_real_architecture_graphs_eager_reference(name):
    """The real configs at 2 layers, float32: graphs == reference and eager == reference."""
    from tests.real_arch import real_model
    from tests.test_engine_real_arch import CASES, PROMPTS as REAL_PROMPTS, engine_matches_reference

    model = real_model(name, device="cuda", logit_scale=10.0)
    for case in CASES:
        for mode in ("graphs", "eager"):
            engine_matches_reference(model, REAL_PROMPTS[name], case[:3] + (mode,) + case[4:])


@pytest.mark.parametrize("strategy,k,tau", [("static", 1, 0.0), ("static", 3, 0.0), ("confadapt", 8, 0.5),
                                            ("verify", 4, 0.0)])
def test_cuda_graph_replay_equals_eager_padded_passes_bf16(strategy, k, tau):
    """Real replays vs the same padded passes run eagerly on the GPU (the emulator's replay):
    bit for bit in bf16; the engine is reused without new captures; capture cost recorded."""
    model = make_model("llama", dtype=torch.bfloat16, device="cuda", scale=4.0)
    kw = dict(strategy=strategy, k=k, tau=tau, max_new_tokens=40, stop_token_ids=())
    graphs = DecodeEngine(model, mtp_token_id=MTP, max_batch_size=8, max_seq_len=256)
    eager = DecodeEngine(model, mtp_token_id=MTP, max_batch_size=8, max_seq_len=256, graphs=True,
                         graph_backend=EmulatedGraphs())
    assert graphs.graphs and graphs.backend.name == "cuda"
    got, want = graphs.generate(PROMPTS, **kw), eager.generate(PROMPTS, **kw)
    assert [(g.tokens, g.chunk_sizes) for g in got] == [(w.tokens, w.chunk_sizes) for w in want]
    captures = graphs.counters["graph_captures"]
    again = graphs.generate(PROMPTS, **kw)  # reuse: same shapes, no new capture
    assert [g.tokens for g in again] == [g.tokens for g in got]
    assert graphs.counters["graph_captures"] == captures > 0 and graphs.counters["capture_s"] > 0
    assert graphs.backend.pool_bytes > 0
