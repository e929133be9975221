"""The engine at the paper's real architectures (2 layers, random weights, float32): the exact
Llama-3.1-8B config (GQA 32/8, head_dim 128, llama3 RoPE scaling, vocabulary 128384, ``<MTP>``
= 128259) and Qwen3-4B-Instruct-2507 (q/k norms, tied embeddings, vocabulary 151936, ``<MTP>``
= 151669) decode token for token and chunk for chunk as the DynamicCache reference, batched
(3 prompts: not a power of two), eager and through the CUDA-graph replay emulator; a
published-layout checkpoint of each imports and decodes. ``tests/test_engine_cuda.py`` runs the
same cases on a GPU with real CUDA graphs."""

from __future__ import annotations

import gc

import pytest
import torch

from mtpsd.decoding.engine import DecodeEngine
from mtpsd.decoding.single import generate_cached
from tests.graph_emulator import EmulatedGraphs
from tests.real_arch import real_model

pytestmark = [pytest.mark.slow]
# real ids: BOS / chat markers, ordinary tokens, ids near the ends of the vocabularies
PROMPTS = {"llama31_8b": [[128000, 128006, 882, 128007, 271, 9906], [128000, 17, 100000, 128255], [5, 6, 7, 8, 9, 10, 11]],
           "qwen3_4b": [[151644, 872, 198, 9707, 11], [17, 100000, 151642], [5, 6, 7, 8, 9, 10, 11]]}
# (strategy, k, tau, engine mode, attention)
CASES = [("static", 3, 0.0, "eager", "causal"), ("confadapt", 4, 0.5, "graphs", "causal"),
         ("confadapt", 4, 0.5, "eager", "bidirectional"), ("verify", 3, 0.0, "graphs", "bidirectional")]


def engine_matches_reference(model, prompts, case, *, graph_backend=None, n_new: int = 6) -> list:
    """Decode ``prompts`` batched with the engine and one by one with the reference; assert equal."""
    strategy, k, tau, mode, attention = case
    model.config.mtp_attention = attention
    mtp = model.config.mtp_token_id
    kw = dict(strategy=strategy, k=k, tau=tau, max_new_tokens=n_new, stop_token_ids=())
    graphs = mode == "graphs"
    eng = DecodeEngine(model, mtp_token_id=mtp, max_batch_size=4, max_seq_len=64, kv_bucket=16, graphs=graphs,
                       graph_backend=graph_backend if graphs else None)
    got = eng.generate(prompts, **kw)
    for i, (p, g) in enumerate(zip(prompts, got)):
        ref = generate_cached(model, torch.tensor([p], device=model.device), mtp_token_id=mtp, **kw)
        assert (g.tokens, g.chunk_sizes) == (ref.tokens, ref.chunk_sizes), (case, i)
    assert eng.counters["graph_replays"] > 0 if graphs else eng.counters["graph_captures"] == 0
    return got


@pytest.fixture(scope="module", params=["qwen3_4b", "llama31_8b"])
def arch(request):
    model = real_model(request.param, logit_scale=10.0)  # Llama: 1.5B parameters, 6 GB
    yield request.param, model
    del model
    gc.collect()


def test_real_architecture_engine_equals_reference(arch):
    name, model = arch
    chunks = set()
    for case in CASES:
        backend = EmulatedGraphs() if case[3] == "graphs" else None
        got = engine_matches_reference(model, PROMPTS[name], case, graph_backend=backend)
        chunks |= {c for g in got for c in g.chunk_sizes}
    assert len(chunks) > 2  # ConfAdapt accepted different counts (the sharpened read-out)


@pytest.mark.parametrize("name,layout", [("qwen3_4b", "qwen"), ("llama31_8b", "llama")])
def test_published_layout_imports_and_decodes(name, layout, tmp_path, monkeypatch):
    """A bf16 checkpoint in the authors' published layout (real config, 1 layer; tokenizer and ids
    as published, no ``mtp_token_id`` recorded) imports through the registry and decodes in
    float32 with the engine exactly as the reference does."""
    import dataclasses

    from mtpsd import published
    from mtpsd.checkpoint import load_checkpoint
    from tests.test_published import LLAMA_ID, QWEN_ID, published_tokenizer

    model = real_model(name, layers=1, dtype=torch.bfloat16, logit_scale=10.0)
    del model.config.mtp_token_id  # the published configs do not record it
    src = tmp_path / "src"
    tok, ends = published_tokenizer(layout)
    model.generation_config.eos_token_id = ends
    model.save_pretrained(src)
    tok.save_pretrained(src)
    del model
    hub = LLAMA_ID if layout == "llama" else QWEN_ID
    monkeypatch.setattr(published, "PUBLISHED",
                        {**published.PUBLISHED, str(src): dataclasses.replace(published.PUBLISHED[hub], hub_id=str(src))})
    info = published.import_mtp_checkpoint(str(src), tmp_path / "ckpt")
    assert info["mtp_token_id"] == published.PUBLISHED[hub].mtp_token_id and info["dtype"] == "bfloat16"
    model, tok = load_checkpoint(tmp_path / "ckpt", dtype="float32", device="cpu")
    assert model.config.mtp_token_id == info["mtp_token_id"]
    engine_matches_reference(model, PROMPTS[name], ("confadapt", 4, 0.5, "eager", "causal"))
