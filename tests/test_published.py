"""The authors' published checkpoints: registry, config resolution, import, decoding.

Offline stand-ins built here have the layout of each published checkpoint (issue 13 s. 1):

- Llama: bf16, vocabulary padded to 128384 rows beyond a 128291-token tokenizer whose
  last 32 tokens were added and only the first (128259) is the mask; no mtp_token_id;
  generation_config ends at 128009 and 128001; a Llama-3 chat template.
- Qwen3: bf16, 151936 rows (no resize), mask 151669 an added token, no BOS, no
  mtp_token_id; generation_config ends at 151645 and 151643.

A patched registry maps each stand-in's directory to a copy of the real entry, so the
code path is the one a hub id takes.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from mtpsd import published
from mtpsd.config import ConfigError, resolve
from mtpsd.errors import MtpsdError
from tests.conftest import REPO

LLAMA_ID, QWEN_ID = "jwkirchenbauer/L3-1-8B-Magpie-MTP", "jwkirchenbauer/Qwen3-4B-Inst-2507-MTP"
LLAMA_CHAT = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
              "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
              "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def _tokenizer(n_base: int, specials: dict[int, str], n_added: int, *, bos, eos, chat_template=None):
    """Word-level tokenizer: characters, fillers up to ``n_base`` ids (``specials`` placed at
    their ids), then ``n_added`` added special tokens ``<|mtp_i|>``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = "0123456789abcdefghijklmnopqrstuvwxyz ?+=.\n"
    vocab = {c: i for i, c in enumerate(chars)}
    for i in range(len(chars), n_base):
        vocab[specials.get(i, f"w{i}")] = i
    added = [f"<|mtp_{i}|>" for i in range(n_added)]
    for j, name in enumerate(added):
        vocab[name] = n_base + j
    tk = Tokenizer(models.WordLevel(vocab, unk_token="w50"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in [*specials.values(), *added]])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos, pad_token=eos)
    if chat_template:
        tok.chat_template = chat_template
    return tok


def _save(model, tok, gen_eos, path):
    model.generation_config.eos_token_id = gen_eos
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def published_tokenizer(layout: str):
    """``(tokenizer, generation end ids)`` of a published layout: "llama" (128291 tokens, the
    last 32 added, the first of them the mask 128259; Llama-3 chat template) or "qwen" (the mask
    151669 an added token, no BOS)."""
    if layout == "llama":
        specials = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128006: "<|start_header_id|>",
                    128007: "<|end_header_id|>", 128008: "<|eom_id|>", 128009: "<|eot_id|>"}
        tok = _tokenizer(128259, specials, 32, bos="<|begin_of_text|>", eos="<|eot_id|>", chat_template=LLAMA_CHAT)
        assert len(tok) == 128291 and tok.convert_tokens_to_ids("<|mtp_0|>") == 128259
        return tok, [128009, 128001]
    specials = {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>"}
    tok = _tokenizer(151669, specials, 1, bos=None, eos="<|im_end|>")
    assert tok.bos_token_id is None and tok.convert_tokens_to_ids("<|mtp_0|>") == 151669
    return tok, [151645, 151643]


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """``{"llama": dir, "qwen": dir}``: the two layouts, saved in bf16."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    root = tmp_path_factory.mktemp("published")
    torch.manual_seed(0)
    tok, ends = published_tokenizer("llama")
    cfg = LlamaConfig(vocab_size=128384, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False,
                      bos_token_id=128000, eos_token_id=128001, dtype="bfloat16")
    llama = _save(LlamaForCausalLM(cfg).to(torch.bfloat16), tok, ends, root / "llama")

    tok, ends = published_tokenizer("qwen")
    cfg = Qwen3Config(vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, tie_word_embeddings=True,
                      bos_token_id=None, eos_token_id=151645, dtype="bfloat16")
    qwen = _save(Qwen3ForCausalLM(cfg).to(torch.bfloat16), tok, ends, root / "qwen")
    for d in (llama, qwen):
        assert "mtp_token_id" not in json.loads((d / "config.json").read_text())
    return {"llama": str(llama), "qwen": str(qwen)}


@pytest.fixture
def registry(monkeypatch, standins):
    """The registry with each stand-in directory standing in for its hub id."""
    table = dict(published.PUBLISHED)
    for name, hub in (("llama", LLAMA_ID), ("qwen", QWEN_ID)):
        table[standins[name]] = dataclasses.replace(published.PUBLISHED[hub], hub_id=standins[name])
    monkeypatch.setattr(published, "PUBLISHED", table)
    return standins


def _base_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _run(checkpoint: str, **run_keys) -> dict:
    raw = _base_config()
    raw["run_names"] = ["pub"]
    raw["runs"] = {"pub": {"checkpoint": checkpoint, **run_keys}}
    return raw


# ---- registry and config -------------------------------------------------------------------


def test_registry_holds_the_published_facts():
    l3, qw = published.PUBLISHED[LLAMA_ID], published.PUBLISHED[QWEN_ID]
    assert (l3.mtp_token_id, set(l3.end_token_ids), l3.chat_template) == (128259, {128009, 128001, 128008}, True)
    assert (qw.mtp_token_id, set(qw.end_token_ids), qw.chat_template) == (151669, {151645, 151643}, False)
    paper = {r.split(",")[1] for r in (REPO / "src" / "mtpsd" / "paper_results.csv").read_text().splitlines()[1:]}
    assert {l3.paper_model, qw.paper_model} <= paper


@pytest.mark.parametrize("hub, chat, name", [(LLAMA_ID, True, "l3-8b-magpie"), (QWEN_ID, False, "qwen3-4b-inst-2507")])
def test_checkpoint_alone_sets_the_run(hub, chat, name):
    cfg = resolve(_run(hub), "pub")
    spec = published.PUBLISHED[hub]
    assert cfg.model.chat_template is chat and cfg.model.name == name
    assert cfg.model.source == "pretrained" and cfg.model.pretrained == spec.base_model
    assert cfg.model.paper_model == spec.paper_model
    assert cfg.train.k_max == cfg.decode.k_max == 16


def test_run_keys_win_over_the_registry():
    cfg = resolve(_run(LLAMA_ID, model={"chat_template": False}, train={"k_max": 8}), "pub")
    assert cfg.model.chat_template is False and cfg.train.k_max == 8 and cfg.model.name == "l3-8b-magpie"


def test_other_checkpoints_need_mtp_token_at_resolve_time(standins, tmp_path):
    with pytest.raises(ConfigError, match=r"runs\.pub\.checkpoint: .*no mtp_token_id; set the run key mtp_token"):
        resolve(_run(standins["llama"]), "pub")
    with pytest.raises(ConfigError, match="GGUF file, which records no mtp_token_id"):
        resolve(_run(str(tmp_path / "m.gguf")), "pub")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="without config.json"):
        resolve(_run(str(tmp_path / "empty")), "pub")
    with pytest.raises(ConfigError, match=r"mtp_token: expected"):
        resolve(_run(standins["llama"], mtp_token=1.5), "pub")
    assert resolve(_run(standins["llama"], mtp_token="<|mtp_0|>"), "pub").mtp_token == "<|mtp_0|>"
    assert resolve(_run(standins["llama"], mtp_token=128259), "pub").mtp_token == 128259
    # the global resolve checks every run before the DAG starts
    with pytest.raises(ConfigError, match="set the run key mtp_token"):
        resolve(_run(standins["qwen"]))


# ---- import, decoding ----------------------------------------------------------------------


def _safetensors_dtypes(path) -> set[str]:
    from safetensors import safe_open

    out = set()
    for f in path.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            out |= {st.get_slice(k).get_dtype() for k in st.keys()}
    return out


@pytest.mark.parametrize("layout, mask, ends", [("llama", 128259, [128001, 128008, 128009]),
                                                ("qwen", 151669, [151643, 151645])])
def test_import_through_the_registry_keeps_bf16(registry, tmp_path, layout, mask, ends):
    out = tmp_path / "ckpt"
    info = published.import_mtp_checkpoint(registry[layout], out)
    assert info["mtp_token_id"] == mask and info["end_token_ids"] == ends
    assert info["dtype"] == "bfloat16" and info["published"] == registry[layout]
    saved = json.loads((out / "config.json").read_text())
    assert saved["mtp_token_id"] == mask and saved["dtype"] == "bfloat16"
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == ends
    assert _safetensors_dtypes(out) == {"BF16"}


def test_import_without_registry_or_mtp_token_fails(standins, tmp_path):
    with pytest.raises(MtpsdError, match="not a published checkpoint mtpsd knows"):
        published.import_mtp_checkpoint(standins["qwen"], tmp_path / "a")
    assert not (tmp_path / "a").exists()
    info = published.import_mtp_checkpoint(standins["qwen"], tmp_path / "b", mtp_token=151669)
    assert info["mtp_token_id"] == 151669 and info["end_token_ids"] == [151643, 151645]
    with pytest.raises(MtpsdError, match="outside the embedding rows"):
        published.import_mtp_checkpoint(standins["qwen"], tmp_path / "c", mtp_token=200000)


@pytest.fixture(scope="module")
def imported(tmp_path_factory, standins):
    """Both stand-ins imported through the (patched) registry."""
    mp = pytest.MonkeyPatch()
    table = dict(published.PUBLISHED)
    for name, hub in (("llama", LLAMA_ID), ("qwen", QWEN_ID)):
        table[standins[name]] = dataclasses.replace(published.PUBLISHED[hub], hub_id=standins[name])
    mp.setattr(published, "PUBLISHED", table)
    root = tmp_path_factory.mktemp("imported")
    try:
        return {n: (root / n, published.import_mtp_checkpoint(standins[n], root / n)) for n in ("llama", "qwen")}
    finally:
        mp.undo()


def _always(model, token: int):
    """Make every position's argmax ``token``: a zero head with a one-hot bias."""
    head = torch.nn.Linear(model.config.hidden_size, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token] = 10.0
    model.lm_head = head.to(model.dtype)
    return model


@pytest.mark.parametrize("layout, chat", [("llama", True), ("qwen", False)])
def test_decode_uses_the_mask_and_stops_at_every_end_id(imported, tmp_path, monkeypatch, layout, chat):
    from mtpsd.checkpoint import load_checkpoint
    from mtpsd.decoding import runner
    from mtpsd.io import atomic_write_jsonl, read_jsonl

    ckpt, info = imported[layout]
    atomic_write_jsonl(tmp_path / "p.jsonl", [{"question": "1+1?"}])
    seen = []
    for end in info["end_token_ids"] + [None]:
        emit = 7 if end is None else end  # 7: an ordinary token, never a stop

        def load(path, **kw):
            model, tok = load_checkpoint(path, **kw)
            model.register_forward_pre_hook(lambda m, a, k: seen.append(k["input_ids"].flatten().tolist()),
                                            with_kwargs=True)
            return _always(model, emit), tok

        monkeypatch.setattr(runner, "load_checkpoint", load)
        s = runner.decode_file(ckpt, tmp_path / "p.jsonl", tmp_path / "o.jsonl", strategy="static", k=2, tau=0.9,
                               max_new_tokens=6, chat_template=chat, device="cpu", dtype="float32")
        row = read_jsonl(tmp_path / "o.jsonl")[0]
        if end is None:
            assert row["stopped_by"] == "length" and row["tokens"] == [7] * 6
        else:
            assert row["stopped_by"] == "eos" and row["tokens"] == [end], (layout, end)
        assert s["n_generations"] == 1
        assert info["mtp_token_id"] in seen[0] and seen[0][-1] == info["mtp_token_id"]  # prefill: prompt + <MTP>
        seen.clear()


def test_lm_eval_adapter_stops_at_every_end_id(imported):
    from mtpsd.checkpoint import load_checkpoint
    from mtpsd.evaluation.lm_eval_adapter import MTPLM

    ckpt, info = imported["llama"]
    model, tok = load_checkpoint(ckpt, dtype="float32", device="cpu")
    lm = MTPLM(pretrained=model, tokenizer=tok, strategy="static", k=2, batch_size=1, max_gen_toks=8)
    assert lm.mtp_token_id == 128259
    assert set(info["end_token_ids"]) <= set(lm._stop_ids())


def test_end_token_ids_unions_every_source(tiny_llama):
    from mtpsd.vocab import end_token_ids
    from tests.conftest import make_char_tokenizer

    model = tiny_llama(64)
    model.generation_config.eos_token_id = [2, 5]
    model.config.eos_token_id = 6
    assert end_token_ids(model, make_char_tokenizer()) == (2, 5, 6)
    model.generation_config.eos_token_id = None
    assert end_token_ids(model) == (6,)


# ---- the report: published runs beside the paper's model -----------------------------------


def test_results_and_table_set_a_published_run_beside_its_paper_model():
    from mtpsd.plotting.data import load_paper_results, read_results
    from mtpsd.reporting.summarize import eval_rows
    from mtpsd.reporting.tables import paper_vs_ours

    cfg = resolve(_run(QWEN_ID), "pub").to_dict()
    result = {"run": "pub", "model": cfg["model"]["name"], "chat_template": False, "task": "mtpsd_gsm8k_cot",
              "strategy": "confadapt", "param": 0.9, "setting": "confadapt-tau0.9", "ckpt": "final",
              "results": {"mtpsd_gsm8k_cot": {"exact_match,flexible-extract": 0.80,
                                              "exact_match_stderr,flexible-extract": 0.011}},
              "decode_stats": {"eff_k_mean": 3.0}, "provenance": {"config": cfg}}
    rows = eval_rows(result, "x.json")
    assert {r["model"] for r in rows} == {"Qwen3-4B-Inst-2507"}
    ours = read_results(REPO / "tests" / "fixtures" / "summary" / "results.csv")
    import pandas as pd

    ours = pd.concat([ours, pd.DataFrame(rows)], ignore_index=True)
    t = paper_vs_ours(ours, load_paper_results())
    row = t[(t["run"] == "pub")]
    assert len(row) == 1 and row["ours"].item() == "80.0 ± 1.1"
    assert row["Qwen3-4B-Inst-2507"].item() == "83.6 ± 1.0" and row["L3.1-8B-Magpie"].item() == "–"
    tiny = t[(t["run"] == "tiny") & (t["setting"] == "ConfAdapt τ=0.9") & t["task"].str.startswith("mtpsd_gsm8k")]
    assert tiny["L3.1-8B-Magpie"].item() == "64.1 ± 1.3"  # runs of no paper model: beside both
