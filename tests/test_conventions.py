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


# ---- results, tables, report and figure carry both accountings -----------------------------

FIX_RESULTS = __import__("pathlib").Path(__file__).parent / "fixtures" / "summary" / "results.csv"


def _with_accounting(df, authors_shift: float = 0.4):
    """Fixture rows as if recorded by this version: project's convention, the authors' accounting
    ``authors_shift`` tokens per pass higher for ConfAdapt."""
    out = df.copy()
    out["convention"] = "project"
    out["eff_k_project"] = out["eff_k"]
    out["eff_k_authors"] = out["eff_k"] + (out["strategy"] == "confadapt") * authors_shift
    return out


def test_summary_rows_carry_both_accountings():
    from mtpsd.plotting.data import read_results
    from mtpsd.reporting.summarize import eval_rows

    result = {"run": "tiny", "task": "mtpsd_synth_math", "strategy": "confadapt", "param": 0.9,
              "setting": "confadapt-tau0.9", "ckpt": "final", "convention": "authors",
              "results": {"mtpsd_synth_math": {"exact_match,flexible-extract": 0.5}},
              "decode_stats": {"eff_k_mean": 3.1, "eff_k_project": 2.5, "eff_k_authors": 3.1}}
    row = eval_rows(result, "x.json")[0]
    assert (row["convention"], row["eff_k"], row["eff_k_project"], row["eff_k_authors"]) == ("authors", 3.1, 2.5, 3.1)
    old = read_results(FIX_RESULTS)  # a CSV written before both were recorded
    assert old["eff_k_authors"].isna().all() and old["eff_k_project"].isna().all()


def test_paper_vs_ours_and_report_compare_the_paper_with_the_authors_accounting(tmp_path):
    from mtpsd.plotting.data import load_paper_results, read_results
    from mtpsd.reporting.report import accounting_section
    from mtpsd.reporting.tables import AUTHORS_EFF_K, paper_vs_ours, write_tables

    ours = _with_accounting(read_results(FIX_RESULTS))
    paper = load_paper_results()
    t = paper_vs_ours(ours, paper)
    row = t[(t["run"] == "tiny") & (t["setting"] == "ConfAdapt τ=0.9") & t["task"].str.startswith("mtpsd_gsm8k")]
    ca = ours[(ours["run"] == "tiny") & (ours["task"] == "mtpsd_gsm8k_cot") & (ours["strategy"] == "confadapt")
              & (ours["param"] == 0.9) & (ours["checkpoint"] == "final")].iloc[0]
    assert row[AUTHORS_EFF_K].item() == f"{ca['eff_k'] + 0.4:.2f}" and row["ours eff. k"].item() == f"{ca['eff_k']:.2f}"
    assert paper_vs_ours(read_results(FIX_RESULTS), paper)[AUTHORS_EFF_K].eq("–").all()  # not recorded: a dash
    write_tables(ours, paper, tmp_path)
    assert "compare it with \"ours eff. k (authors' accounting)\"" in (tmp_path / "table02_paper_vs_ours.md").read_text()
    lines, numbers = accounting_section(ours, paper, "mtpsd_gsm8k_cot")
    text = "\n".join(lines)
    assert "compared with the authors' accounting" in text
    line = next(ln for ln in lines if ln.startswith("| tiny | project | ConfAdapt τ=0.9 |"))
    assert f"| {ca['eff_k']:.2f} | {ca['eff_k'] + 0.4:.2f} | +0.40 | 3.3, 3.1 |" in line  # the paper's beside
    assert numbers["tiny.accounting.confadapt0.9.eff_k_authors"] == pytest.approx(ca["eff_k"] + 0.4)
    assert accounting_section(read_results(FIX_RESULTS), paper, "mtpsd_gsm8k_cot") == ([], {})


def test_pareto_marks_the_other_accounting():
    import matplotlib

    matplotlib.use("Agg")
    from mtpsd.plotting.data import read_results
    from mtpsd.plotting.pareto import other_accounting, plot_pareto

    ours = _with_accounting(read_results(FIX_RESULTS))
    ours = ours[ours["task"] == "mtpsd_gsm8k_cot"]
    hollow = lambda fig: [ln for ln in fig.axes[0].lines if ln.get_markerfacecolor() == "white"  # noqa: E731
                          and ln.get_marker() == "o"]
    fig = plot_pareto(ours, "mtpsd_gsm8k_cot")
    n_ca = ((ours["strategy"] == "confadapt") & (ours["checkpoint"] == "final")
            & (ours["metric"] == "accuracy_pct") & (ours["metric_variant"] == "flexible-extract")).sum()
    assert len(hollow(fig)) == n_ca > 0  # one hollow marker per ConfAdapt point, at the authors' effective k
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "hollow: the authors' accounting (the paper's)" in labels
    assert hollow(plot_pareto(read_results(FIX_RESULTS)[lambda d: d["task"] == "mtpsd_gsm8k_cot"],
                              "mtpsd_gsm8k_cot")) == []
    flipped = ours.assign(convention="authors", eff_k=ours["eff_k_authors"])
    assert other_accounting(flipped).dropna().round(6).tolist() == \
        ours.loc[other_accounting(flipped).dropna().index, "eff_k_project"].round(6).tolist()


# ---- lm-eval, config and CLI -----------------------------------------------------------------

def test_lm_eval_hands_back_the_conventions_text_and_counts_both(tiny_llama):
    """A stop string with no end id: lm-eval gets the same text under both conventions (it cuts
    at the stop string), the project stops there, the authors' tokens run to the budget; each
    run's decode_stats carries both accountings, from its one decode."""
    from tests.test_lm_eval_adapter import MTP as CMTP, char_tokenizer, request

    from mtpsd.evaluation.lm_eval_adapter import MTPLM

    torch.set_num_threads(1)
    model = tiny_llama(seed=3)
    model.generation_config.eos_token_id = 2
    tok = char_tokenizer()
    kw = dict(pretrained=model, tokenizer=tok, strategy="static", k=3, batch_size=1, max_gen_toks=20,
              mtp_token_id=CMTP)
    free = MTPLM(**kw).generate_until([request("Q: abc?", until=[])])[0]
    stop = next(free[i:i + 2] for i in range(3, len(free) - 2) if free.index(free[i:i + 2]) == i)
    out, stats = {}, {}
    for conv in CONVENTIONS:
        lm = MTPLM(convention=conv, **kw)
        out[conv] = lm.generate_until([request("Q: abc?", until=[stop])])[0]
        stats[conv] = lm.decode_stats()
        assert stats[conv]["convention"] == conv and lm.results[0].convention == conv
    assert out["project"] == out["authors"] == free[: free.index(stop)]
    assert stats["project"]["accounting"] == stats["authors"]["accounting"]
    assert stats["project"]["eff_k_mean"] == stats["project"]["eff_k_project"]
    assert stats["authors"]["eff_k_mean"] == stats["authors"]["eff_k_authors"]
    assert stats["project"]["accounting"]["project"]["stopped_by"]["stop_string"] == 1
    assert stats["authors"]["tokens"] > stats["project"]["tokens"]


def test_config_and_cli_take_the_convention(tmp_path, tiny_llama):
    import json

    from tests.test_lm_eval_adapter import char_tokenizer

    from mtpsd.cli import build_parser, main
    from mtpsd.config import load_config, merge_sources, resolve
    from mtpsd.config.base import ConfigError

    assert load_config(["config/config.yaml"]).decode.convention == "project"
    for verb in ("decode", "evaluate"):
        sub = build_parser(verb)._subparsers._group_actions[0].choices[verb]
        flag = next(a for a in sub._actions if "--convention" in a.option_strings)
        assert set(flag.choices) == set(CONVENTIONS)
    raw = merge_sources(["config/config.yaml"])
    raw["decode"]["convention"] = "paper"
    with pytest.raises(ConfigError, match="decode.convention"):
        resolve(raw)
    model = tiny_llama(seed=3)
    model.generation_config.eos_token_id = 2
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    char_tokenizer().save_pretrained(ckpt)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"question": "abc"}\n{"question": "Hi"}\n')
    summary = {}
    for conv in CONVENTIONS:
        out = tmp_path / f"{conv}.jsonl"
        assert main(["decode", "--checkpoint", str(ckpt), "--prompts", str(prompts), "--strategy", "static", "--k", "3",
                     "--max-new-tokens", "10", "--dtype", "float64", "--device", "cpu", "--convention", conv,
                     "--out", str(out)]) == 0
        summary[conv] = json.loads(out.with_name(f"{conv}.summary.json").read_text())
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert all(r["convention"] == conv and set(r["accounting"]) == set(CONVENTIONS) for r in rows)
        assert summary[conv]["convention"] == conv
    # budget 10 at k=3 with no end id: the project fills it (3+3+3+1), the authors stop at 9
    assert summary["project"]["accounting"] == summary["authors"]["accounting"]
    assert summary["project"]["eff_k_project"] == pytest.approx(10 / 4)
    assert summary["project"]["eff_k_authors"] == summary["authors"]["eff_k_mean"] == pytest.approx(3.0)


def test_conventions_table_rows():
    from mtpsd.evaluation.conventions import convention_row, conventions_markdown

    stats = {"eff_k_mean": 2.0, "eff_k_project": 2.0, "eff_k_authors": 2.5,
             "accounting": {"project": {"tokens": 20, "forward_passes": 10, "stopped_by": {"eos": 1}},
                            "authors": {"tokens": 30, "forward_passes": 12, "stopped_by": {"eos": 1}}}}
    result = {"task": "mtpsd_synth_math", "strategy": "confadapt", "param": 0.9, "setting": "confadapt-tau0.9",
              "ckpt": "final", "convention": "project", "n_docs": 1, "decode_stats": stats,
              "results": {"mtpsd_synth_math": {"exact_match,flexible-extract": 0.5,
                                               "exact_match_stderr,flexible-extract": 0.1}}}
    row = convention_row(result)
    assert (row["value"], row["eff_k_project"], row["eff_k_authors"], row["authors_tokens"]) == (50.0, 2.0, 2.5, 30)
    line = conventions_markdown([row]).splitlines()[2]
    assert line == "| confadapt-tau0.9 | project | 50.0 ± 10.0 | 2.00 | 2.50 | +0.50 | 20 / 30 | 10 / 12 |"
