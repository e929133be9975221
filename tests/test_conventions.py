"""The decoding conventions (issue 27): ``project`` (the default) and ``authors`` (the authors'
public decoding code), each switch where it matters, and both accountings of effective k.

Each of the five switches is shown on a model where it changes the outcome: a model whose
``<MTP>`` row (and a vocabulary padding row) wins argmaxes; a top-1 probability exactly at
tau, and bf16 rounding tau 0.9 down to 0.8984375; an end id inside a chunk; a stop string
with no end id; a budget that is not a multiple of k. The engine (eager, and its graphs
through the CPU replay emulator) equals the ``DynamicCache`` reference under both
conventions, token for token and in both accountings, and the no-cache definition pins the
reference down."""

from __future__ import annotations

import pytest
import torch

from mtpsd.decoding.common import Convention, GenerationResult, StopChecker, Tally, confident, readout
from mtpsd.decoding.reference import generate_no_cache
from mtpsd.decoding.single import generate_cached
from mtpsd.decoding.stats import pooled_stats
from mtpsd.errors import MtpsdError
from tests.test_decoding import CharTok
from tests.test_engine import MTP, PROMPTS, V, make_engine, make_model

pytestmark = pytest.mark.usefixtures("one_thread")
MODES = ["eager", "graphs"]
CONVENTIONS = ["project", "authors"]


def same(got: GenerationResult, ref: GenerationResult, where: str = "") -> None:
    assert (got.tokens, got.chunk_sizes, got.stopped_by, got.text) == \
        (ref.tokens, ref.chunk_sizes, ref.stopped_by, ref.text), where
    assert got.accounting == ref.accounting and got.convention == ref.convention, where


def ref(model, prompt, **kw) -> GenerationResult:
    return generate_cached(model, torch.tensor([prompt]), mtp_token_id=MTP, **kw)


# ---- switch 1: <MTP> and padding rows -----------------------------------------------------

def mtp_wins_model(row: int = MTP):
    """Random Llama whose ``row`` (``<MTP>``, or ``V - 1``: a vocabulary padding row, as after
    ``pad_to_multiple_of``) outscores the token the model emits first, so under the full
    vocabulary it wins that argmax."""
    m = make_model("llama")
    first = ref(m, PROMPTS[0], strategy="static", k=3, max_new_tokens=3, stop_token_ids=()).tokens[0]
    with torch.no_grad():
        m.lm_head.weight[row] = m.lm_head.weight[first] * 1.5
    m.config.vocab_size = V - 2  # rows V-2, V-1: vocabulary padding
    m.test_key = None  # not the cached references of make_model's weights
    return m


@pytest.mark.parametrize("row", [MTP, V - 1])
def test_full_vocabulary_lets_mtp_and_padding_rows_win(row):
    m = mtp_wins_model(row)
    kw = dict(strategy="static", k=3, max_new_tokens=24, stop_token_ids=())
    proj = ref(m, PROMPTS[0], **kw)
    auth = ref(m, PROMPTS[0], convention="authors", **kw)
    assert row not in proj.tokens
    assert auth.tokens[0] == row  # the authors' argmax has the whole vocabulary
    assert generate_no_cache(m, torch.tensor([PROMPTS[0]]), mtp_token_id=MTP, convention="authors", **kw).tokens \
        == auth.tokens


@pytest.mark.parametrize("mode", MODES)
def test_engine_equals_reference_with_mtp_winning(mode):
    m = mtp_wins_model()
    eng = make_engine(m, mode, max_seq_len=128, k_max=8, kv_bucket=16)
    for conv in CONVENTIONS:
        for strategy, k, tau in (("static", 3, 0.0), ("confadapt", 6, 0.8), ("verify", 4, 0.0)):
            kw = dict(strategy=strategy, k=k, tau=tau, max_new_tokens=20, stop_token_ids=(5, 77), convention=conv)
            got = eng.generate(PROMPTS, **kw)
            for i, (p, g) in enumerate(zip(PROMPTS, got)):
                same(g, ref(m, p, **kw), f"{conv} {strategy} row {i}")
            emitted = {t for g in got for t in g.tokens}
            assert (MTP in emitted) == (conv == "authors"), (conv, strategy)


# ---- switch 2: the ConfAdapt threshold ------------------------------------------------------

def test_threshold_exactly_at_tau_and_bf16_rounding():
    # float32 logits: a top-1 probability p used as tau: the project's p > tau rejects, the authors' p >= tau accepts
    logits = torch.tensor([[3.0, 1.0, 0.5, 0.0], [0.0, 0.1, 0.2, 0.3]])
    p = float(logits.softmax(-1).amax(-1)[0])
    assert confident(logits, p).tolist() == [False, False]
    assert confident(logits, p, Convention("authors")).tolist() == [True, False]
    # bf16: tau 0.9 is 0.8984375 in bf16, and a probability just under 0.9 rounds onto it: the authors accept it
    assert torch.tensor(0.9, dtype=torch.bfloat16).item() == 0.8984375
    row = torch.tensor([[4.875] + [0.0] * 15], dtype=torch.bfloat16)  # exact in bf16
    assert 0.897 < row.float().softmax(-1)[0, 0].item() < 0.9
    assert row.softmax(-1).amax().item() == 0.8984375  # the softmax in bf16 rounds onto the bf16 threshold
    assert confident(row, 0.9).tolist() == [False]
    assert confident(row, 0.9, Convention("authors")).tolist() == [True]
    assert readout(row, torch.empty(0, dtype=torch.long), "confadapt", 0.9, Convention("authors"))[1][1] == [1]


def first_pass_probs(model, prompt, k):
    """Top-1 probabilities of the first pass's ``k`` read-outs (prompt + k-1 masks), computed as the
    reference's first pass computes them."""
    x = torch.tensor([prompt + [MTP] * (k - 1)])
    with torch.no_grad():
        return model(input_ids=x, logits_to_keep=k).logits[0].softmax(-1).amax(-1).tolist()


def test_probability_exactly_at_tau_in_the_decoders():
    """tau = the lower of the first pass's top-1 probabilities at read-outs 1 and 2 (a float32 model:
    both conventions' softmax is float32): the project rejects it (a chunk of 1), the authors accept
    it (>= 2); the eager engine, the reference and the definition agree under both. (Graph mode pads
    the attended slots, which moves a float32 probability by an ulp: equal at exactly tau only by
    chance, as any two float computations.)"""
    m = make_model("llama", dtype=torch.float32)
    k, prompt = 4, PROMPTS[2]
    tau = min(first_pass_probs(m, prompt, k)[:2])
    eng = make_engine(m, "eager", max_seq_len=128, k_max=8)
    first = {}
    for conv in CONVENTIONS:
        kw = dict(strategy="confadapt", k=k, tau=tau, max_new_tokens=12, stop_token_ids=(), convention=conv)
        r = ref(m, prompt, **kw)
        same(eng.generate([prompt], **kw)[0], r, conv)
        assert generate_no_cache(m, torch.tensor([prompt]), mtp_token_id=MTP, **kw).chunk_sizes == r.chunk_sizes
        first[conv] = r.chunk_sizes[0]
    assert first["project"] == 1 and first["authors"] >= 2


# ---- switches 3-5: stopping, and both accountings ------------------------------------------

def test_end_id_inside_a_chunk_keeps_the_chunk():
    m = make_model("llama")
    kw = dict(strategy="static", k=4, max_new_tokens=24)
    free = ref(m, PROMPTS[0], stop_token_ids=(), **kw)
    j = next(j for j, t in enumerate(free.tokens) if j % 4 == 1 and t not in free.tokens[:j])  # 2nd of a chunk
    stop = (free.tokens[j],)
    proj = ref(m, PROMPTS[0], stop_token_ids=stop, **kw)
    auth = ref(m, PROMPTS[0], stop_token_ids=stop, convention="authors", **kw)
    assert proj.tokens == free.tokens[: j + 1] and proj.chunk_sizes[-1] == 2 and proj.stopped_by == "eos"
    assert auth.tokens == free.tokens[: j + 3] and auth.chunk_sizes[-1] == 4 and auth.stopped_by == "eos"
    # one decode, both accountings: each run carries the other's numbers, the same passes
    for r in (proj, auth):
        assert r.accounting == {"project": {"tokens": j + 1, "forward_passes": j // 4 + 1, "stopped_by": "eos"},
                                "authors": {"tokens": j + 3, "forward_passes": j // 4 + 1, "stopped_by": "eos"}}


@pytest.mark.parametrize("mode", MODES)
def test_stop_string_without_end_id(mode):
    """The project stops at the stop string; the authors decode on to the budget (no end id
    comes) and cut the text at the stop string afterwards: the same text, more tokens and passes.
    (The same banned ids for both, so only the stopping differs.)"""
    m = make_model("llama")
    tok = CharTok()
    kw = dict(strategy="confadapt", k=5, tau=0.6, max_new_tokens=30, stop_token_ids=(), tokenizer=tok,
              banned_token_ids=[MTP])
    free = ref(m, PROMPTS[0], **kw)
    stop = free.text[9:11]
    proj = ref(m, PROMPTS[0], stop_strings=(stop,), **kw)
    auth = ref(m, PROMPTS[0], stop_strings=(stop,), convention="authors", **kw)
    assert proj.stopped_by == "stop_string" and auth.stopped_by == "length"
    assert auth.text == proj.text == free.text[: free.text.index(stop)]
    assert auth.tokens == free.tokens[: len(auth.tokens)] and len(auth.tokens) > len(proj.tokens)
    assert proj.accounting == auth.accounting  # both from one decode, whichever convention reports
    assert proj.accounting["project"] == {"tokens": len(proj.tokens), "forward_passes": len(proj.chunk_sizes),
                                          "stopped_by": "stop_string"}
    assert proj.accounting["authors"] == {"tokens": len(auth.tokens), "forward_passes": len(auth.chunk_sizes),
                                          "stopped_by": "length"}
    eng = make_engine(m, mode, max_seq_len=128)
    for conv, r in (("project", proj), ("authors", auth)):
        got = eng.generate(PROMPTS[:3], stop_strings=(stop,), convention=conv, **kw)
        same(got[0], r, conv)
        for p, g in zip(PROMPTS[1:3], got[1:]):
            same(g, ref(m, p, stop_strings=(stop,), convention=conv, **kw), conv)


@pytest.mark.parametrize("strategy,k", [("static", 3), ("confadapt", 4), ("verify", 3)])
def test_budget_not_a_multiple_of_k(strategy, k):
    m = make_model("llama")
    kw = dict(strategy=strategy, k=k, tau=0.0 if strategy == "confadapt" else 0.9, max_new_tokens=10,
              stop_token_ids=())  # tau 0: ConfAdapt accepts all k
    proj = ref(m, PROMPTS[1], **kw)
    auth = ref(m, PROMPTS[1], convention="authors", **kw)
    assert len(proj.tokens) == 10 and proj.stopped_by == "length"
    assert auth.tokens == proj.tokens[: len(auth.tokens)] and auth.stopped_by == "length"
    assert 10 - k < len(auth.tokens) <= 10  # stops once fewer than k slots remain: up to k-1 short
    if strategy != "verify":
        assert auth.chunk_sizes == [k] * (10 // k)  # k=3: 9 tokens; k=4: 8
        assert proj.chunk_sizes == [k] * (10 // k) + [10 % k]
    assert proj.accounting == auth.accounting


def test_budget_below_k_cuts_the_only_chunk():
    stop = StopChecker((2,), (), None, 2)
    assert stop.cut_authors([], [7, 8, 2, 10], 4) == ([7, 8], "length")  # the end id lies past the budget
    assert stop.cut_authors([], [7, 2, 9, 10], 4) == ([7, 2], "eos")


def test_tally_counts_both_ways_from_one_stream():
    stop = StopChecker((2,), (), None, 11)
    for name in CONVENTIONS:
        t = Tally(stop, 4, Convention(name))
        done = [t.add(c) for c in ([5, 6, 7, 8], [9, 2, 3, 4], [6, 6])]
        assert done == [False, True, True]  # the end id ends both in pass 2; nothing is read after
        r = t.result(t0=0.0, t_first=0.0, prompt_tokens=3)
        assert r.accounting == {"project": {"tokens": 6, "forward_passes": 2, "stopped_by": "eos"},
                                "authors": {"tokens": 8, "forward_passes": 2, "stopped_by": "eos"}}
        assert r.tokens == ([5, 6, 7, 8, 9, 2] if name == "project" else [5, 6, 7, 8, 9, 2, 3, 4])
    stats = pooled_stats([r, r])
    assert stats["eff_k_project"] == 3.0 and stats["eff_k_authors"] == 4.0 and stats["eff_k_mean"] == 4.0
    assert stats["accounting"]["authors"]["stopped_by"]["eos"] == 2 and stats["convention"] == "authors"
    with pytest.raises(MtpsdError, match="convention='paper'"):
        Convention("paper")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy,k,tau", [("static", 3, 0.0), ("confadapt", 6, 0.8), ("verify", 4, 0.0)])
def test_engine_equals_reference_under_the_authors_convention(strategy, k, tau, mode):
    """Batched, rows stopping at different times (some by an end id mid-chunk), several groups."""
    m = make_model("llama")
    kw = dict(strategy=strategy, k=k, tau=tau, max_new_tokens=22, convention="authors")
    free = [ref(m, p, stop_token_ids=(), **kw) for p in PROMPTS]
    stop = next(t for t in free[0].tokens[2:] if sum(t in f.tokens for f in free) < len(free))
    eng = make_engine(m, mode, max_batch_size=4, max_seq_len=128, k_max=8, kv_bucket=16)
    got = eng.generate(PROMPTS, stop_token_ids=(stop,), **kw)
    refs = [ref(m, p, stop_token_ids=(stop,), **kw) for p in PROMPTS]
    for i, (g, r) in enumerate(zip(got, refs)):
        same(g, r, f"row {i}")
    assert {r.stopped_by for r in refs} == {"eos", "length"}
    if mode == "graphs":
        assert eng.counters["graph_replays"] > eng.counters["graph_captures"] > 0
