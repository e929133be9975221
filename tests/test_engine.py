"""DecodeEngine == the DynamicCache reference decoders, token for token and chunk for chunk:
static (k = 1, 2, 4), ConfAdapt (several tau), verify; causal and bidirectional masks; alone and
batched (5 prompts: not a power of two; rows stopping at different times, some inside a chunk,
so batches shrink and the cache compacts; several groups; stop strings); random Llama and
Qwen3 in float64 with real-sized ids (vocabulary 4096, ``<MTP>`` = 4000: far past the cache's
128 slots, as Llama-3.1's 128259 and Qwen3's 151669 are past any cache).

Every case runs in both engine modes: ``eager`` (exact shapes) and ``graphs`` (padded shapes,
every decode pass captured once and replayed) through the CPU replay emulator at the
CUDA-graph seam (``tests/graph_emulator.py``), which rejects host syncs inside a pass, checks
that captured addresses never move, clobbers other graphs' outputs on every replay and
re-runs the pass from its static inputs only. Negative controls show it catches a forgotten
input copy and a ``.item()`` in the pass."""

from __future__ import annotations

import pytest
import torch

from mtpsd.decoding.engine import DecodeEngine
from mtpsd.decoding.single import generate_cached
from mtpsd.errors import MtpsdError
from tests.conftest import make_tiny_llama
from tests.graph_emulator import EmulatedGraphs, HostSyncError
from tests.test_decoding import CharTok, OracleDrafts, hf_greedy

V, MTP = 4096, 4000  # real-sized ids: the mask id is far past the slot count of the tests' caches
PROMPTS = [[1, 5, 7, 9, 11], [1, 5], [4, 8, 15, 16, 23, 42, 3, 3, 9], [2, 3, 6], [17, 1, 2500, 3999]]
SETTINGS = [("static", 1, 0.0), ("static", 2, 0.0), ("static", 4, 0.0), ("confadapt", 6, 0.5),
            ("confadapt", 6, 0.8), ("confadapt", 6, 0.95), ("verify", 4, 0.0)]
MODES = ["eager", "graphs"]
N_NEW = 24


pytestmark = pytest.mark.usefixtures("one_thread")


def make_engine(model, mode: str, **kw) -> DecodeEngine:
    """``mode`` "graphs": padded shapes and captured passes: real CUDA graphs on a GPU, the CPU
    replay emulator elsewhere."""
    if mode == "graphs":
        kw.update(graphs=True, graph_backend=None if model.device.type == "cuda" else EmulatedGraphs())
    return DecodeEngine(model, mtp_token_id=MTP, **kw)


def make_qwen3(seed: int = 0, dtype=torch.float64, device="cpu", vocab_size: int = V):
    """A tiny random Qwen3 (grouped-query attention, q/k norms, explicit head_dim)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                      attn_implementation="sdpa")
    model = Qwen3ForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    model.config.mtp_token_id = MTP
    return model


def make_model(name: str, seed: int = 0, dtype=torch.float64, device="cpu", scale: float = 80.0):
    """Random Llama / Qwen3 with a scaled-up un-embedding: top-1 probabilities spread over (0, 1),
    so ConfAdapt chunks vary."""
    model = (make_tiny_llama(V, seed=seed, dtype=dtype, mtp_token_id=MTP).to(device) if name == "llama"
             else make_qwen3(seed, dtype, device))
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    model.test_key = (name, seed, str(dtype), str(device), scale)  # same key, same weights: references are reused
    return model


_REFERENCES: dict = {}


def reference(model, prompt, **kw):
    """The DynamicCache reference of one prompt, kept for the models ``make_model`` builds (the
    eager and graph cases of one setting share it)."""
    key = getattr(model, "test_key", None)
    if key is None:
        return generate_cached(model, torch.tensor([prompt], device=model.device), mtp_token_id=MTP, **kw)
    key = (key, model.config.mtp_attention if hasattr(model.config, "mtp_attention") else None, tuple(prompt),
           tuple(sorted((k, v if not isinstance(v, (list, set)) else tuple(v)) for k, v in kw.items()
                        if k != "tokenizer")), type(kw.get("tokenizer")).__name__)
    if key not in _REFERENCES:
        _REFERENCES[key] = generate_cached(model, torch.tensor([prompt], device=model.device), mtp_token_id=MTP, **kw)
    return _REFERENCES[key]


def assert_same(got, ref, where=""):
    assert got.tokens == ref.tokens, where
    assert got.chunk_sizes == ref.chunk_sizes, where
    assert got.stopped_by == ref.stopped_by, where
    assert got.forward_passes == ref.forward_passes, where


def pick_stop(free: list[list[int]], free_chunks: list[list[int]]) -> int:
    """A token that some rows emit and others do not, first met inside a chunk where possible,
    so rows stop at different times (some mid-chunk) and others run to the budget."""
    best = None
    for row, chunks in zip(free, free_chunks):
        ends = {sum(chunks[: i + 1]) - 1 for i in range(len(chunks))}
        for j, t in enumerate(row[3:], start=3):
            if t in row[:j] or all(t in r for r in free):
                continue
            if j not in ends:
                return t
            best = t if best is None else best
    assert best is not None, "no token separates the rows"
    return best


def check_equal(model, strategy, k, tau, *, mode: str, prompts=PROMPTS, **kw):
    """Engine (batched and alone) vs the reference per prompt, with a stop token that splits the rows."""
    base = dict(strategy=strategy, k=k, tau=tau, max_new_tokens=N_NEW)
    free = [reference(model, p, stop_token_ids=(), **base, **kw) for p in prompts]
    stop = pick_stop([r.tokens for r in free], [r.chunk_sizes for r in free])
    eng = make_engine(model, mode, max_batch_size=8, max_seq_len=128, k_max=8, kv_bucket=16)
    for stops in ((), (stop,)):
        refs = [reference(model, p, stop_token_ids=stops, **base, **kw) for p in prompts]
        batch = eng.generate(prompts, stop_token_ids=stops, **base, **kw)
        for i, (p, b, r) in enumerate(zip(prompts, batch, refs)):
            assert_same(b, r, f"batched row {i}, stops {stops}")
            assert_same(eng.generate([p], stop_token_ids=stops, **base, **kw)[0], r, f"alone row {i}")
    assert {r.stopped_by for r in refs} == {"eos", "length"}  # rows stop at different times
    if mode == "graphs":
        assert eng.counters["graph_replays"] > eng.counters["graph_captures"] > 0
    else:
        assert eng.counters["graph_captures"] == 0 and eng.counters["passes"] > 0
    return eng, free + refs


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy,k,tau", SETTINGS)
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_engine_equals_reference(arch, strategy, k, tau, mode):
    model = make_model(arch)
    eng, refs = check_equal(model, strategy, k, tau, mode=mode)
    if strategy == "confadapt":
        assert len({c for r in refs for c in r.chunk_sizes}) > 1  # tau makes chunks vary
    if strategy == "static" and k > 1:
        assert any(r.stopped_by == "eos" and r.chunk_sizes[-1] < k for r in refs)  # stop inside a chunk
    assert eng.counters["compactions"] > 0  # rows finished at different times and the batch shrank


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [2, 4])
def test_verify_with_good_drafts_equals_reference_and_greedy(k, mode):
    """Drafts accepted fully, partly or not at all (oracle), rows that are and are not on the oracle's path."""
    m = make_model("llama")
    greedy = hf_greedy(m, PROMPTS[0], 40)
    seq = PROMPTS[0] + greedy
    oracle = OracleDrafts(m, seq + [3] * 16)
    prompts = [seq[:5], seq[:2], seq[:9], [4, 8, 15, 16, 23, 42]]  # rows 0, 2 on the oracle's path
    check_equal(oracle, "verify", k, 0.0, mode=mode, prompts=prompts)
    eng = make_engine(oracle, mode, max_seq_len=128)
    res = eng.generate(prompts, strategy="verify", k=k, max_new_tokens=20, stop_token_ids=())
    assert [r.tokens for r in res] == [hf_greedy(m, p, 20) for p in prompts]  # lossless
    assert max(res[0].chunk_sizes) == max(res[2].chunk_sizes) == k  # drafts accepted
    assert min(res[0].chunk_sizes[:-1]) < k  # and rejected


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy,k", [("static", 3), ("confadapt", 5)])
def test_stop_strings_batched(strategy, k, mode):
    m = make_model("llama")
    tok = CharTok()
    kw = dict(strategy=strategy, k=k, tau=0.6, max_new_tokens=N_NEW, stop_token_ids=(), tokenizer=tok)
    free = reference(m, PROMPTS[0], **kw)
    stop = free.text[9:11]
    eng = make_engine(m, mode, max_seq_len=128)
    refs = [reference(m, p, stop_strings=(stop,), **kw) for p in PROMPTS]
    got = eng.generate(PROMPTS, stop_strings=(stop,), **kw)
    for g, r in zip(got, refs):
        assert_same(g, r)
        assert g.text == r.text
    assert got[0].stopped_by == "stop_string" and stop not in got[0].text


@pytest.mark.parametrize("mode", MODES)
def test_batched_confadapt_cache_grows_by_own_tokens(mode):
    """No holes: each row's cache holds its prompt and the tokens it fed back (all but its last chunk)."""
    m = make_model("llama")
    eng = make_engine(m, mode, max_seq_len=128)
    res = eng.generate(PROMPTS, strategy="confadapt", k=6, tau=0.6, max_new_tokens=N_NEW, stop_token_ids=())
    for p, r in zip(PROMPTS, res):
        assert r.extras["cache_len"] == len(p) + len(r.tokens) - r.chunk_sizes[-1]
    assert len({tuple(r.chunk_sizes) for r in res}) > 1  # rows accepted different counts per pass
    # a shared cache with holes grows by the longest row's chunk every pass: more than any row's own tokens
    hole_growth = max(map(len, PROMPTS)) + sum(max(c) for c in zip(*[r.chunk_sizes for r in res]))
    assert all(r.extras["cache_len"] < hole_growth for r in res)


@pytest.mark.parametrize("mode", MODES)
def test_mask_budget_rule_and_effect(mode):
    m = make_model("llama")
    eng = make_engine(m, mode, max_seq_len=128, mask_budget=12)
    assert [eng.masks_per_row("confadapt", 16, b) for b in (1, 2, 3, 4, 5, 8, 64)] == [11, 5, 3, 2, 1, 0, 0]
    assert eng.masks_per_row("verify", 4, 1) == 3  # clamped to k - 1
    assert eng.masks_per_row("static", 4, 64) == 3  # static keeps its k
    kw = dict(strategy="confadapt", k=6, tau=0.0, max_new_tokens=N_NEW, stop_token_ids=())  # tau 0: accept all
    res = eng.generate(PROMPTS, **kw)  # 5 live rows: 12 // 5 - 1 = 1 mask, chunks of 2
    assert all(r.chunk_sizes[:-1] == [2] * (len(r.chunk_sizes) - 1) for r in res)
    alone = eng.generate(PROMPTS[:1], **kw)[0]  # 1 row: 11 masks, clamped to k - 1 = 5: chunks of 6
    assert alone.chunk_sizes[:-1] == [6] * (len(alone.chunk_sizes) - 1)
    greedy = [hf_greedy(m, p, N_NEW) for p in PROMPTS]
    ver = eng.generate(PROMPTS, strategy="verify", k=4, max_new_tokens=N_NEW, stop_token_ids=())
    assert [r.tokens for r in ver] == greedy  # verify stays lossless under the budget


@pytest.mark.parametrize("strategy,k,tau", [("confadapt", 6, 0.5), ("verify", 4, 0.0)])
@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_mask_budget_graphs_equal_eager(strategy, k, tau, attention):
    """With a budget the masks per row change as rows finish (no reference decoder has that):
    captured passes equal eager ones, rows stopping mid-chunk, batch shrinking; verify stays greedy."""
    m = make_model("qwen3", seed=2)
    m.config.mtp_attention = attention
    kw = dict(strategy=strategy, k=k, tau=tau, max_new_tokens=N_NEW)
    free = make_engine(m, "eager", max_seq_len=128, mask_budget=12).generate(PROMPTS, stop_token_ids=(), **kw)
    stop = pick_stop([r.tokens for r in free], [r.chunk_sizes for r in free])
    got = {mode: make_engine(m, mode, max_seq_len=128, kv_bucket=16, mask_budget=12).generate(
        PROMPTS, stop_token_ids=(stop,), **kw) for mode in MODES}
    assert [(r.tokens, r.chunk_sizes) for r in got["graphs"]] == [(r.tokens, r.chunk_sizes) for r in got["eager"]]
    assert {r.stopped_by for r in got["eager"]} == {"eos", "length"}
    if strategy == "verify":
        assert [r.tokens for r in got["eager"]] == [
            reference(m, p, strategy="static", k=1, max_new_tokens=N_NEW, stop_token_ids=(stop,)).tokens
            for p in PROMPTS]


@pytest.mark.parametrize("mode", MODES)
def test_accept_fn_replays_chunk_sizes(mode):
    m = make_model("qwen3")
    eng = make_engine(m, mode, max_seq_len=128)
    plan = [3, 1, 4, 1, 5, 2]
    calls = []

    def replay(row, step, n_cand):
        calls.append((row, step, n_cand))
        return min(plan[(step + row) % len(plan)], n_cand)

    kw = dict(k=5, max_new_tokens=N_NEW, stop_token_ids=())
    res = eng.generate(PROMPTS[:2], strategy="confadapt", tau=0.9, accept_fn=replay, **kw)
    for row, r in enumerate(res):
        want = [min(plan[(s + row) % len(plan)], 5) for s in range(len(r.chunk_sizes))]
        assert r.chunk_sizes[:-1] == want[:-1] and r.chunk_sizes[-1] <= want[-1]
    assert {c[2] for c in calls} == {5} and calls[0][:2] == (0, 0)
    # accepting every candidate is static k; accepting one is greedy
    all_in = eng.generate(PROMPTS[:2], strategy="confadapt", accept_fn=lambda r, s, n: n, **kw)
    assert [r.tokens for r in all_in] == [reference(m, p, strategy="static", **kw).tokens for p in PROMPTS[:2]]
    one = eng.generate(PROMPTS[:2], strategy="confadapt", accept_fn=lambda r, s, n: 1, **kw)
    assert [r.tokens for r in one] == [hf_greedy(m, p, N_NEW) for p in PROMPTS[:2]]


def test_engine_is_reused_and_checks_arguments():
    m = make_model("llama")
    eng = DecodeEngine(m, mtp_token_id=MTP, max_seq_len=128, k_max=4)
    kw = dict(strategy="static", k=3, max_new_tokens=10, stop_token_ids=())
    first = eng.generate(PROMPTS, **kw)
    cache = eng._cache
    again = eng.generate(PROMPTS[:2], **kw)
    assert eng._cache is cache  # buffers allocated once
    assert [r.tokens for r in again] == [r.tokens for r in first[:2]]
    with pytest.raises(MtpsdError, match="k_max"):
        eng.generate(PROMPTS, strategy="static", k=5)
    with pytest.raises(MtpsdError, match="max_seq_len"):
        eng.generate([[1] * 120], **kw)
    with pytest.raises(MtpsdError, match="accept_fn"):
        eng.generate(PROMPTS, strategy="verify", k=3, accept_fn=lambda r, s, n: 1)
    with pytest.raises(MtpsdError, match="accept_fn returned"):
        eng.generate(PROMPTS, strategy="confadapt", k=3, max_new_tokens=10, accept_fn=lambda r, s, n: 0)
    with pytest.raises(MtpsdError, match="empty"):
        eng.generate([[]], **kw)
    with pytest.raises(MtpsdError, match="CUDA"):
        DecodeEngine(m, mtp_token_id=MTP, graphs=True)


@pytest.mark.parametrize("mode", MODES)
def test_more_prompts_than_rows_run_in_groups(mode):
    m = make_model("llama")
    eng = make_engine(m, mode, max_batch_size=3, max_seq_len=128)
    prompts = PROMPTS + [[7, 7, 1], [9]]
    kw = dict(strategy="confadapt", k=4, tau=0.6, max_new_tokens=12, stop_token_ids=())
    got = eng.generate(prompts, **kw)
    for p, g in zip(prompts, got):
        assert_same(g, reference(m, p, **kw))
    assert [g.extras["batch_size"] for g in got] == [3, 3, 3, 3, 3, 3, 1]
    assert {g.extras["engine"] for g in got} == {mode}


@pytest.mark.slow
def test_smollm2_engine_equals_reference(smollm2_gguf, gsm8k_dir):
    """SmolLM2-135M-Instruct fp32: two GSM8K prompts batched, static / ConfAdapt / verify."""
    import json

    from mtpsd.data.prompts import encode_prompt
    from mtpsd.mtp_token import add_mtp_token, load_base

    model, tok = load_base(str(smollm2_gguf), dtype=torch.float32)
    mtp = add_mtp_token(model, tok, seed=0)
    model.eval()
    rows = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:2]]
    prompts = [encode_prompt(tok, r["question"], chat_template=True) for r in rows]
    eng = DecodeEngine(model, mtp_token_id=mtp, max_seq_len=512)
    for strategy, k, tau in (("static", 1, 0.0), ("static", 3, 0.0), ("confadapt", 4, 0.1), ("verify", 3, 0.0)):
        kw = dict(strategy=strategy, k=k, tau=tau, max_new_tokens=16, stop_token_ids=(tok.eos_token_id,),
                  tokenizer=tok)
        got = eng.generate(prompts, **kw)
        for p, g in zip(prompts, got):
            ref = generate_cached(model, torch.tensor([p]), mtp_token_id=mtp, **kw)
            assert g.tokens == ref.tokens and g.chunk_sizes == ref.chunk_sizes, (strategy, k)


def test_decode_file_uses_the_engine(tmp_path):
    """``mtpsd decode`` (runner.decode_file) writes what the reference decoder produces."""
    from mtpsd.checkpoint import load_checkpoint
    from mtpsd.data.prompts import encode_prompt
    from mtpsd.decoding.runner import decode_file
    from mtpsd.io import atomic_write_jsonl, read_jsonl
    from tests.conftest import make_train_dir

    root = make_train_dir(tmp_path, n_train=6)
    rows = read_jsonl(root / "train.jsonl")[:3]
    atomic_write_jsonl(tmp_path / "prompts.jsonl", rows)
    summary = decode_file(root / "mtp_init", tmp_path / "prompts.jsonl", tmp_path / "out.jsonl", strategy="confadapt",
                          k=3, tau=0.0, max_new_tokens=6, chat_template=False)
    out = read_jsonl(tmp_path / "out.jsonl")
    model, tok = load_checkpoint(root / "mtp_init")
    for row, got in zip(rows, out):
        ids = torch.tensor([encode_prompt(tok, row["question"], chat_template=False)])
        ref = generate_cached(model, ids, mtp_token_id=model.config.mtp_token_id, strategy="confadapt", k=3, tau=0.0,
                              max_new_tokens=6, stop_token_ids=(tok.eos_token_id,), tokenizer=tok)
        assert got["tokens"] == ref.tokens and got["chunk_sizes"] == ref.chunk_sizes
    assert summary["n_generations"] == 3 and summary["eff_k_mean"] > 1


def test_sliding_window_models_are_refused():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, use_sliding_window=True, sliding_window=8,
                      max_window_layers=1)
    assert "sliding_attention" in cfg.layer_types
    with pytest.raises(MtpsdError, match="full-attention"):
        DecodeEngine(Qwen3ForCausalLM(cfg), mtp_token_id=MTP)


@pytest.mark.parametrize("strategy,k,tau", [("static", 3, 0.0), ("confadapt", 6, 0.5)])
def test_eager_attention_model(strategy, k, tau):
    """A model loaded with eager attention decodes the same (the engine runs its own sdpa)."""
    model = make_tiny_llama(V, seed=0, attn_implementation="eager", mtp_token_id=MTP)
    with torch.no_grad():
        model.lm_head.weight.mul_(80.0)
    check_equal(model, strategy, k, tau, mode="graphs")


def test_engine_attention_packs_grouped_heads(monkeypatch):
    """engine_sdpa == sdpa with repeated K/V (3 query heads per kv head, per-row mask), and the
    engine uses it for its passes only."""
    import types

    import torch.nn.functional as F

    from mtpsd.decoding import attention

    g = torch.Generator().manual_seed(0)
    B, Hkv, r, W, S, D = 2, 2, 3, 5, 11, 8
    q = torch.randn(B, Hkv * r, W, D, generator=g, dtype=torch.float64)
    k, v = (torch.randn(B, Hkv, S, D, generator=g, dtype=torch.float64) for _ in range(2))
    allowed = torch.rand(B, W, S, generator=g) < 0.6
    allowed[..., 0] = True
    zero, ninf = torch.tensor(0.0, dtype=torch.float64), torch.tensor(float("-inf"), dtype=torch.float64)
    plain = torch.where(allowed, zero, ninf)[:, None]
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(r, 1), v.repeat_interleave(r, 1), attn_mask=plain)
    for mask in (plain, attention.packed_mask(allowed, r, zero, ninf)):
        got, _ = attention.engine_sdpa(None, q, k, v, mask, scaling=None)
        torch.testing.assert_close(got, want.transpose(1, 2), rtol=0, atol=1e-12)

    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(attention, "F", types.SimpleNamespace(
        scaled_dot_product_attention=lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw)))
    model = make_model("qwen3")  # 4 heads, 2 kv heads
    DecodeEngine(model, mtp_token_id=MTP).generate([[1, 2, 3]], strategy="static", k=2, max_new_tokens=4,
                                                   stop_token_ids=())
    assert calls and all(s[1] == 2 for s in calls)  # ran on the kv heads
    assert model.config._attn_implementation == "sdpa"  # restored after every pass


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy,k,tau", [("static", 4, 0.0), ("confadapt", 6, 0.5), ("verify", 4, 0.0)])
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_bda_engine_equals_reference(arch, strategy, k, tau, mode):
    """A BDA-trained model (config.mtp_attention = bidirectional): the engine, batched and alone,
    eager or graphs, equals the DynamicCache decoder with the same mask (itself pinned to the
    naive dense-mask decoder in test_decoding), and the mask changes what is decoded."""
    model = make_model(arch, seed=1)
    causal = [reference(model, p, strategy=strategy, k=k, tau=tau, max_new_tokens=N_NEW, stop_token_ids=())
              for p in PROMPTS]
    model.config.mtp_attention = "bidirectional"
    eng, refs = check_equal(model, strategy, k, tau, mode=mode)
    assert eng.attention == "bidirectional"
    if strategy == "verify":  # lossless either way
        assert [r.tokens for r in refs[:len(PROMPTS)]] == [c.tokens for c in causal]
    else:
        assert [(r.tokens, r.chunk_sizes) for r in refs[:len(PROMPTS)]] != [(c.tokens, c.chunk_sizes) for c in causal]


def test_engine_for_follows_the_attention_mode():
    from mtpsd.decoding.engine import engine_for

    model = make_model("llama")
    a = engine_for(model, MTP, batch=1, seq_len=64)
    assert a.attention == "causal" and engine_for(model, MTP, batch=1, seq_len=64) is a
    b = engine_for(model, MTP, batch=1, seq_len=64, attention="bidirectional")
    assert b is not a and b.attention == "bidirectional"
    model.config.mtp_attention = "bidirectional"
    assert engine_for(model, MTP, batch=1, seq_len=64) is b


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy,k,tau", [("confadapt", 4, 0.5), ("verify", 3, 0.0)])
def test_chunked_prefill_equals_reference(strategy, k, tau, mode, monkeypatch):
    """Prompts longer than ``prefill_chunk`` are fed in several passes; no pass is wider than
    ``prefill_chunk + k - 1`` columns (the bound the evaluation memory plan uses)."""
    m = make_model("qwen3", seed=1)
    widths = []
    real = DecodeEngine._pass

    def recording(self, ids, lens, n, **kw):
        widths.append(ids.shape[1])
        return real(self, ids, lens, n, **kw)

    monkeypatch.setattr(DecodeEngine, "_pass", recording)
    prompts = [PROMPTS[2] * 2, PROMPTS[1], PROMPTS[2], PROMPTS[0] * 3]  # 18, 2, 9, 15 tokens
    kw = dict(strategy=strategy, k=k, tau=tau, max_new_tokens=12, stop_token_ids=())
    eng = make_engine(m, mode, max_seq_len=128, prefill_chunk=4)
    got = eng.generate(prompts, **kw)
    for p, g in zip(prompts, got):
        assert_same(g, reference(m, p, **kw))
    assert max(widths) <= 4 + k - 1
    assert eng.counters["eager_passes"] >= 1 + 3  # the longest prompt needed 4 prefill passes before its first read-out


@pytest.mark.parametrize("strategy,k,budget,attention", [("static", 3, None, "causal"), ("confadapt", 5, None, "causal"),
                                                         ("verify", 4, None, "bidirectional"),
                                                         ("confadapt", 5, 12, "bidirectional"), ("verify", 3, 8, "causal")])
def test_prepare_captures_every_shape_before_decoding(strategy, k, budget, attention):
    """After ``prepare`` a generate call of that size captures nothing (speed runs time no capture)."""
    m = make_model("llama", seed=3)
    m.config.mtp_attention = attention
    eng = make_engine(m, "graphs", max_batch_size=8, max_seq_len=256, kv_bucket=16, mask_budget=budget)
    n = eng.prepare(batch=len(PROMPTS), strategy=strategy, k=k, seq_len=max(map(len, PROMPTS)) + 30 + 2 * k)
    assert n == eng.counters["graph_captures"] > 0
    kw = dict(strategy=strategy, k=k, tau=0.5, max_new_tokens=30)
    free = eng.generate(PROMPTS, stop_token_ids=(), **kw)
    stop = pick_stop([r.tokens for r in free], [r.chunk_sizes for r in free])
    got = eng.generate(PROMPTS, stop_token_ids=(stop,), **kw) + eng.generate(PROMPTS[:1], stop_token_ids=(), **kw)
    assert eng.counters["graph_captures"] == n  # every pass shape was captured up front
    want = make_engine(m, "eager", max_seq_len=256, mask_budget=budget).generate(PROMPTS, stop_token_ids=(stop,), **kw)
    assert [(g.tokens, g.chunk_sizes) for g in got[:len(PROMPTS)]] == [(w.tokens, w.chunk_sizes) for w in want]


def test_emulator_catches_a_forgotten_input_copy(monkeypatch):
    """Negative control: a replay that does not copy ``lens`` into its graph's static buffer
    replays stale lengths, and the engine-vs-reference check fails."""
    def forgetful(g, inputs):
        g.inputs[0].copy_(inputs[0])
        g.inputs[2].copy_(inputs[2])  # inputs[1] (lens) forgotten

    monkeypatch.setattr(DecodeEngine, "_load", staticmethod(forgetful))
    with pytest.raises(AssertionError):
        check_equal(make_model("llama"), "confadapt", 6, 0.5, mode="graphs")


def test_emulator_rejects_a_host_sync_in_the_pass(monkeypatch):
    """Negative control: ``.item()`` inside the pass works eagerly, and the capture refuses it
    (on CUDA it would be a capture error or a value frozen at capture), naming the way out."""
    real = DecodeEngine._pass

    def syncing(self, ids, lens, n, **kw):
        if int(lens.max()) < 0:  # a host read of a device value
            raise AssertionError
        return real(self, ids, lens, n, **kw)

    monkeypatch.setattr(DecodeEngine, "_pass", syncing)
    m = make_model("llama")
    kw = dict(strategy="static", k=2, max_new_tokens=6, stop_token_ids=())
    assert len(make_engine(m, "eager", max_seq_len=128).generate(PROMPTS, **kw)) == len(PROMPTS)
    with pytest.raises(MtpsdError, match="--engine eager") as err:
        make_engine(m, "graphs", max_seq_len=128).generate(PROMPTS, **kw)
    assert isinstance(err.value.__cause__, HostSyncError) and "host read" in str(err.value)


def test_emulator_rejects_a_buffer_moved_after_capture():
    """Negative control: a cache reallocated behind the captured graphs' back is caught at replay
    (a real replay would write into the freed buffers)."""
    from mtpsd.decoding.kv_cache import RowCache

    m = make_model("llama")
    eng = make_engine(m, "graphs", max_seq_len=128)
    kw = dict(strategy="static", k=2, max_new_tokens=8, stop_token_ids=())
    eng.generate(PROMPTS[:1], **kw)
    eng._cache = RowCache.for_model(m, eng._cache.rows, eng._cache.slots)
    with pytest.raises(HostSyncError, match="reallocated"):
        eng.generate(PROMPTS[:1], **kw)
