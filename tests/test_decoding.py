"""MTP decoding (method.md section 6): KV cache == no cache, k=1 / verify == HF greedy,
batch == single, stops, banned ids. Tiny random Llama in float64. The equalities run on
the default path (the engine) and on the ``DynamicCache`` reference decoders."""

from __future__ import annotations

import pytest
import torch

from mtpsd.decoding import generate, generate_batch
from mtpsd.decoding.batch import generate_batch_cached
from mtpsd.decoding.reference import generate_no_cache
from mtpsd.decoding.single import generate_cached
from mtpsd.errors import MtpsdError
from mtpsd.settings import format_setting, parse_setting

V, MTP = 64, 63
PROMPT = [1, 5, 7, 9, 11]
DECODERS = {"engine": (generate, generate_batch), "cached": (generate_cached, generate_batch_cached)}


pytestmark = pytest.mark.usefixtures("one_thread")


def sharp_llama(tiny_llama, scale: float = 25.0, seed: int = 0):
    """Random Llama with a scaled-up un-embedding so top-1 probabilities spread over (0, 1)."""
    m = tiny_llama(seed=seed)
    with torch.no_grad():
        m.lm_head.weight.mul_(scale)
    return m


def hf_greedy(model, prompt, n):
    """HF ``generate`` greedy, ``n`` tokens, the model's ``<MTP>`` suppressed (as the decoders ban it)."""
    mtp = getattr(model.config, "mtp_token_id", None)
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                         suppress_tokens=[MTP if mtp is None else mtp], eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


class WrappedLM(torch.nn.Module):
    """Base of the test wrappers below: looks like the wrapped HF causal LM to the decoder."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config, self.generation_config = model.config, model.generation_config

    @property
    def device(self):
        return self.inner.device

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()


class OracleDrafts(WrappedLM):
    """Wraps an LM; at ``<MTP>`` inputs the logits become a one-hot of the true greedy
    continuation ``seq`` (position q predicts ``seq[q + 1]``, 3 past its end), wrong when
    ``q % 7 == 0``: proposals are accepted fully, partly or not at all, as with a trained
    model. Tensor ops only (no host reads), so CUDA graphs (and their emulator) can capture it."""

    def __init__(self, model, seq):
        super().__init__(model)
        self.mtp = int(model.config.mtp_token_id)
        self.register_buffer("seq", torch.tensor(list(seq) + [3], dtype=torch.long), persistent=False)

    def forward(self, input_ids, past_key_values=None, position_ids=None, logits_to_keep=0, **kw):
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        out = self.inner(input_ids=input_ids, past_key_values=past_key_values, position_ids=position_ids, **kw)
        B, L = input_ids.shape
        pos = position_ids if position_ids is not None else torch.arange(past, past + L).expand(B, L)
        target = self.seq[(pos + 1).clamp(max=len(self.seq) - 1)]  # (B, L)
        target = torch.where(pos % 7 == 0, (target + 1) % self.mtp, target)
        onehot = torch.full_like(out.logits, -10.0).scatter_(-1, target[..., None], 10.0)
        logits = torch.where((input_ids == self.mtp)[..., None], onehot, out.logits)  # (B, L, V)
        out.logits = logits[:, -logits_to_keep:] if logits_to_keep else logits
        return out


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("strategy,k", [("static", 1), ("static", 2), ("static", 4), ("confadapt", 4),
                                        ("confadapt", 6)])
def test_kv_cache_equals_no_cache(tiny_llama, strategy, k, decoder):
    m = sharp_llama(tiny_llama)
    x = torch.tensor([PROMPT])
    kw = dict(mtp_token_id=MTP, strategy=strategy, k=k, tau=0.6, max_new_tokens=40, stop_token_ids=())
    got, ref = DECODERS[decoder][0](m, x, **kw), generate_no_cache(m, x, **kw)
    assert got.tokens == ref.tokens
    assert got.chunk_sizes == ref.chunk_sizes
    assert sum(got.chunk_sizes) == len(got.tokens) == 40 and got.forward_passes == len(got.chunk_sizes)
    if strategy == "confadapt":
        assert len(set(got.chunk_sizes)) > 1, got.chunk_sizes  # tau makes chunks vary
    else:
        assert set(got.chunk_sizes[:-1]) == {k}


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("seed", [0, 1])
def test_static_k1_and_verify_equal_hf_greedy(tiny_llama, seed, decoder):
    m = tiny_llama(seed=seed)
    greedy = hf_greedy(m, PROMPT, 30)
    gen = DECODERS[decoder][0]
    assert gen(m, torch.tensor([PROMPT]), mtp_token_id=MTP, strategy="static", k=1, max_new_tokens=30,
               stop_token_ids=()).tokens == greedy
    for k in (2, 3, 5):
        res = gen(m, torch.tensor([PROMPT]), mtp_token_id=MTP, strategy="verify", k=k, max_new_tokens=30,
                       stop_token_ids=())
        assert res.tokens == greedy, k


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("k", [2, 4, 6])
def test_verify_with_good_drafts_is_lossless_and_fast(tiny_llama, k, decoder):
    m = tiny_llama()
    greedy = hf_greedy(m, PROMPT, 40)
    oracle = OracleDrafts(m, PROMPT + greedy + [3] * 16)
    res = DECODERS[decoder][0](oracle, torch.tensor([PROMPT]), mtp_token_id=MTP, strategy="verify", k=k, max_new_tokens=40,
                   stop_token_ids=())
    assert res.tokens == greedy
    assert max(res.chunk_sizes) == k and min(res.chunk_sizes[:-1]) < k  # full and partial acceptance
    assert res.forward_passes < 40


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("strategy,k", [("static", 1), ("static", 3), ("confadapt", 5), ("verify", 4)])
def test_batch_equals_single(tiny_llama, strategy, k, decoder):
    generate, generate_batch = DECODERS[decoder]
    m = sharp_llama(tiny_llama)
    greedy = hf_greedy(m, PROMPT, 40)
    seq = PROMPT + greedy
    model = OracleDrafts(m, seq + [3] * 16) if strategy == "verify" else m
    # prefixes of one greedy sequence (so the verify oracle is right for every row), different lengths
    prompts = [seq[:5], seq[:2], seq[:9], [4, 8, 15, 16, 23, 42]] if strategy != "verify" else [seq[:5], seq[:2],
                                                                                               seq[:9]]
    kw = dict(mtp_token_id=MTP, strategy=strategy, k=k, tau=0.6, max_new_tokens=25, stop_token_ids=(seq[14],))
    batch = generate_batch(model, prompts, pad_token_id=0, **kw)
    for p, b in zip(prompts, batch):
        single = generate(model, torch.tensor([p]), **kw)
        assert b.tokens == single.tokens and b.chunk_sizes == single.chunk_sizes and b.stopped_by == single.stopped_by
    if strategy == "verify":
        assert any(max(b.chunk_sizes) > 1 for b in batch)


def test_stop_token_inside_chunk(tiny_llama):
    m = tiny_llama()
    free = generate(m, torch.tensor([PROMPT]), mtp_token_id=MTP, strategy="static", k=4, max_new_tokens=40,
                    stop_token_ids=())
    # a token whose first occurrence is in the middle of a chunk
    j = next(i for i, t in enumerate(free.tokens) if i % 4 in (1, 2) and t not in free.tokens[:i])
    res = generate(m, torch.tensor([PROMPT]), mtp_token_id=MTP, strategy="static", k=4, max_new_tokens=40,
                   stop_token_ids=(free.tokens[j],))
    assert res.tokens == free.tokens[: j + 1]
    assert res.stopped_by == "eos" and sum(res.chunk_sizes) == j + 1 and res.chunk_sizes[-1] == j % 4 + 1


class CharTok:
    """Minimal tokenizer: id i -> one letter; 60 real ids (rows 60..63 of a 64-row model are padding)."""

    def __len__(self):
        return 60

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(ord("a") + i % 26) for i in ids)


def test_stop_string_cuts_text_and_tokens(tiny_llama):
    m = tiny_llama()
    tok = CharTok()
    free = generate(m, torch.tensor([PROMPT]), mtp_token_id=MTP, strategy="static", k=3, max_new_tokens=30,
                    stop_token_ids=(), tokenizer=tok)
    text = free.text
    stop = text[10:12]
    first = text.index(stop)
    res = generate(m, torch.tensor([PROMPT]), mtp_token_id=MTP, strategy="static", k=3, max_new_tokens=30,
                   stop_token_ids=(), stop_strings=(stop,), tokenizer=tok)
    assert res.stopped_by == "stop_string"
    assert res.tokens == free.tokens[: first + 2]  # up to the token completing the stop string
    assert res.text == text[:first]  # lm-eval style: cut before the stop string
    with pytest.raises(MtpsdError, match="tokenizer"):
        generate(m, torch.tensor([PROMPT]), mtp_token_id=MTP, k=2, stop_strings=("x",))


class Boost(WrappedLM):
    """Adds +100 to the logits of ``ids``: without suppression they would always win."""

    def __init__(self, model, ids):
        super().__init__(model)
        self.ids = ids

    def forward(self, **kw):
        out = self.inner(**kw)
        out.logits = out.logits.clone()
        out.logits[..., self.ids] += 100.0
        return out


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("strategy,k", [("static", 3), ("confadapt", 4), ("verify", 3)])
def test_mtp_and_padding_rows_never_emitted(tiny_llama, strategy, k, decoder):
    generate, generate_batch = DECODERS[decoder]
    banned = [60, 61, 62, MTP]  # CharTok has 60 ids: rows 60..62 are vocabulary padding
    model = Boost(tiny_llama(), banned)
    kw = dict(mtp_token_id=MTP, strategy=strategy, k=k, tau=0.5, max_new_tokens=20, stop_token_ids=())
    naive = generate(model, torch.tensor([PROMPT]), banned_token_ids=[], **kw)
    assert set(naive.tokens) <= set(banned)  # the test can fail: unsuppressed, they win
    res = generate(model, torch.tensor([PROMPT]), tokenizer=CharTok(), **kw)
    assert len(res.tokens) == 20 and not set(res.tokens) & set(banned)
    batch = generate_batch(model, [PROMPT, PROMPT[:2]], tokenizer=CharTok(), **kw)
    assert all(not set(b.tokens) & set(banned) for b in batch)


def test_default_stop_is_model_eos(tiny_llama):
    m = tiny_llama()
    free = generate(m, torch.tensor([PROMPT]), mtp_token_id=MTP, strategy="static", k=2, max_new_tokens=30,
                    stop_token_ids=())
    m.generation_config.eos_token_id = free.tokens[5]
    res = generate(m, torch.tensor([PROMPT]), mtp_token_id=MTP, strategy="static", k=2, max_new_tokens=30)
    assert res.tokens == free.tokens[: free.tokens.index(free.tokens[5]) + 1] and res.stopped_by == "eos"


def test_bad_arguments(tiny_llama):
    m = tiny_llama()
    with pytest.raises(MtpsdError, match="strategy"):
        generate(m, torch.tensor([PROMPT]), mtp_token_id=MTP, strategy="beam")
    with pytest.raises(MtpsdError, match="mtp_token_id"):
        generate(m, torch.tensor([PROMPT]), mtp_token_id=None, strategy="static", k=2)
    # k=1 needs no <MTP> token (step-0 / base model baseline)
    assert len(generate(m, torch.tensor([PROMPT]), mtp_token_id=None, strategy="static", k=1,
                        max_new_tokens=3, stop_token_ids=()).tokens) == 3


def test_settings_round_trip():
    assert parse_setting("confadapt-tau0.9", k_max=16) == ("confadapt", 16, 0.9)
    assert parse_setting("static-k3") == ("static", 3, 0.0)
    assert parse_setting("verify-k4") == ("verify", 4, 0.0)
    for s in ("static-k1", "verify-k4", "confadapt-tau0.995", "confadapt-tau0.6"):
        strategy, k, tau = parse_setting(s)
        assert format_setting(strategy, k=k, tau=tau) == s
    for bad in ("static-k", "greedy", "confadapt-tau", "static-k0", "confadapt-tau2"):
        with pytest.raises(MtpsdError):
            parse_setting(bad)


# ---- BDA: a model trained with bidirectional masks is decoded with them -------------------


def test_step_mask_equals_the_naive_bda_mask():
    from mtpsd.decoding.common import step_attention_mask
    from mtpsd.decoding.reference import full_mask

    for length, n in [(6, 0), (6, 1), (7, 3), (9, 5)]:
        got = step_attention_mask(torch.ones((1, length), dtype=torch.bool), length, n)
        assert torch.equal(got, full_mask(length, n, "cpu")), (length, n)
    # with a cache: the rows of the last q queries of the full mask
    got = step_attention_mask(torch.ones((1, 9), dtype=torch.bool), 4, 3)
    assert torch.equal(got, full_mask(9, 3, "cpu")[:, :, -4:])


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("strategy,k", [("static", 2), ("static", 4), ("confadapt", 4), ("confadapt", 6)])
def test_bda_kv_cache_equals_naive_bda(tiny_llama, decoder, strategy, k):
    """Cached BDA decoding (engine and DynamicCache decoder) == full recomputation with the
    dense BDA mask, token for token and chunk for chunk (float64)."""
    gen, _ = DECODERS[decoder]
    m = sharp_llama(tiny_llama)
    x = torch.tensor([PROMPT])
    kw = dict(mtp_token_id=MTP, strategy=strategy, k=k, tau=0.6, max_new_tokens=40, stop_token_ids=())
    got = gen(m, x, attention="bidirectional", **kw)
    ref = generate_no_cache(m, x, attention="bidirectional", **kw)
    assert got.tokens == ref.tokens
    assert got.chunk_sizes == ref.chunk_sizes
    assert sum(got.chunk_sizes) == 40
    if k == 2:  # one mask attending to itself: the same as causal
        causal = generate_no_cache(m, x, attention="causal", **kw)
        assert (causal.tokens, causal.chunk_sizes) == (ref.tokens, ref.chunk_sizes)


def test_bda_mask_changes_only_the_mask_read_outs(tiny_llama):
    """BDA: the logits of x_t (which sees no mask) are the causal ones; the masks' differ."""
    from mtpsd.decoding.reference import full_mask

    m = sharp_llama(tiny_llama)
    seq = torch.tensor([PROMPT + [MTP] * 3])
    with torch.no_grad():
        causal = m(input_ids=seq).logits[0]
        bda = m(input_ids=seq, attention_mask=full_mask(seq.shape[1], 3, "cpu")).logits[0]
    n = len(PROMPT)
    assert torch.allclose(causal[:n], bda[:n], atol=1e-12)  # prompt and x_t see no mask either way
    for j in range(n, n + 3):
        assert not torch.allclose(causal[j], bda[j]), j


@pytest.mark.parametrize("decoder", DECODERS)
def test_checkpoint_attention_is_the_default(tiny_llama, decoder):
    """``config.mtp_attention`` picks the mask when the caller names none (batch too). Seed 1:
    a model whose Static-4 tokens differ between the masks (the logits always do, above)."""
    generate, generate_batch = DECODERS[decoder]
    m = sharp_llama(tiny_llama, seed=1)
    x = torch.tensor([PROMPT])
    kw = dict(mtp_token_id=MTP, strategy="static", k=4, max_new_tokens=30, stop_token_ids=())
    causal = generate(m, x, **kw)
    m.config.mtp_attention = "bidirectional"
    try:
        assert generate(m, x, **kw).tokens == generate(m, x, attention="bidirectional", **kw).tokens
        assert generate(m, x, **kw).tokens != causal.tokens
        assert generate(m, x, attention="causal", **kw).tokens == causal.tokens
        batch = generate_batch(m, [PROMPT, PROMPT[:2]], pad_token_id=0, **kw)
        assert batch[0].tokens == generate(m, x, **kw).tokens
        m.config.mtp_attention = "sideways"
        with pytest.raises(MtpsdError, match="mtp_attention='sideways'"):
            generate(m, x, **kw)
    finally:
        del m.config.mtp_attention


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("strategy,k", [("static", 3), ("confadapt", 5), ("verify", 4)])
def test_bda_batch_equals_single(tiny_llama, decoder, strategy, k):
    generate, generate_batch = DECODERS[decoder]
    m = sharp_llama(tiny_llama)
    greedy = hf_greedy(m, PROMPT, 40)
    seq = PROMPT + greedy
    model = OracleDrafts(m, seq + [3] * 16) if strategy == "verify" else m
    prompts = [seq[:5], seq[:2], seq[:9]] + ([] if strategy == "verify" else [[4, 8, 15, 16, 23, 42]])
    kw = dict(mtp_token_id=MTP, strategy=strategy, k=k, tau=0.6, max_new_tokens=25, stop_token_ids=(seq[14],),
              attention="bidirectional")
    batch = generate_batch(model, prompts, pad_token_id=0, **kw)
    for p, b in zip(prompts, batch):
        single = generate(model, torch.tensor([p]), **kw)
        assert b.tokens == single.tokens and b.chunk_sizes == single.chunk_sizes and b.stopped_by == single.stopped_by


@pytest.mark.parametrize("decoder", DECODERS)
def test_bda_verify_stays_lossless(tiny_llama, decoder):
    generate, _ = DECODERS[decoder]
    m = tiny_llama()
    greedy = hf_greedy(m, PROMPT, 30)
    res = generate(m, torch.tensor([PROMPT]), mtp_token_id=MTP, strategy="verify", k=4, max_new_tokens=30,
                   stop_token_ids=(), attention="bidirectional")
    assert res.tokens == greedy
