"""Prompt formats per model layout (method.md section 4), rendered end to end.

Two stand-in tokenizers built here (character level, no download): a Llama-3-style one
(BOS <|begin_of_text|> added by the tokenizer and written by its chat template, turns
ending in <|eot_id|>; the paper's L3.1-8B-Magpie setting: chat template on) and a
Qwen-style one without a BOS token (end <|im_end|>, pad <|endoftext|>; the paper's
Qwen3-4B setting: chat template off, input + "\\n\\n" + response). For each: one training
row, one GSM8K CoT prompt as lm-eval builds it for our decoder (few-shot as multi-turn chat
when the template is on), and the story-perplexity context: never two BOS.
"""

from __future__ import annotations

import string

import pytest
import torch

from mtpsd.data.prompts import encode_context, encode_example, encode_prompt

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<MTP>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<MTP>"]
VOCAB = 160


def _char_tokenizer(specials: list[str], *, bos: str | None, eos: str, pad: str):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    chars = string.printable.replace("\x0b", "").replace("\x0c", "").replace("\r", "")
    vocab = {s: i for i, s in enumerate(specials)}
    vocab |= {c: len(specials) + i for i, c in enumerate(chars)}
    assert len(vocab) < VOCAB
    tk = Tokenizer(models.WordLevel(vocab, unk_token=pad))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    if bos is not None:
        tk.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    rest = [s for s in specials if s not in (bos, eos, pad)]
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos, pad_token=pad,
                                   additional_special_tokens=rest)


@pytest.fixture(scope="module")
def llama_tok():
    tok = _char_tokenizer(LLAMA_SPECIALS, bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|end_of_text|>")
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def qwen_tok():
    tok = _char_tokenizer(QWEN_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>")
    assert tok.bos_token is None and tok.bos_token_id is None
    return tok


def _lm(tok):
    from mtpsd.evaluation.lm_eval_adapter import MTPLM
    from tests.conftest import make_tiny_llama

    model = make_tiny_llama(VOCAB, dtype=torch.float32, mtp_token_id=tok.convert_tokens_to_ids("<MTP>"))
    return MTPLM(pretrained=model, tokenizer=tok, strategy="static", k=1, batch_size=1, max_gen_toks=8)


def _gsm8k_context(tok, gsm8k_dir, *, chat: bool) -> str:
    """The first GSM8K test prompt exactly as lm-eval builds it inside ``mtpsd evaluate``."""
    from mtpsd.evaluation.evaluate import task_config, task_manager

    lm = _lm(tok)
    task = task_manager().load([task_config("mtpsd_gsm8k_cot", gsm8k_dir / "test.jsonl")])["tasks"]["mtpsd_gsm8k_cot"]
    task.build_all_requests(limit=1, apply_chat_template=chat, fewshot_as_multiturn=chat,
                            chat_template=lm.apply_chat_template if chat else None,
                            tokenizer_name="stand-in")
    (inst,) = task.instances
    return lm, inst.args[0]


Q, A = "Ann has 3 pens and buys 4. How many?", "3 + 4 = 7.\nThe answer is: 7"


def test_llama_layout_chat_template_on(llama_tok, gsm8k_dir):
    tok, bos = llama_tok, llama_tok.bos_token_id
    # training row: the template's user turn + assistant header, the answer as written, <|eot_id|>
    ids = encode_example(tok, Q, A, chat_template=True, max_length=1024)
    assert ids.count(bos) == 1 and ids[0] == bos and ids[-1] == tok.eos_token_id
    assert tok.decode(ids) == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n" + Q
                               + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n" + A + "<|eot_id|>")
    assert "The answer is: 7" in tok.decode(ids)  # MetaMathQA's own ending, not "#### 7"
    # GSM8K: 8 examples as multi-turn chat, then the question; one BOS when lm-eval encodes it
    lm, ctx = _gsm8k_context(tok, gsm8k_dir, chat=True)
    assert ctx.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ: ")
    assert ctx.count("<|start_header_id|>user") == 9 and ctx.count("<|start_header_id|>assistant") == 9
    assert ctx.endswith("A: Let's think step by step.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    enc = lm.tok_batch_encode([ctx])[0][0].tolist()
    assert enc.count(bos) == 1 and enc[0] == bos
    assert encode_context(tok, ctx) == enc == lm.tok_encode(ctx)
    # decoding prompts (mtpsd decode) and story perplexity contexts: one BOS as well
    assert encode_prompt(tok, Q, chat_template=True).count(bos) == 1
    assert encode_context(tok, "Write a story.").count(bos) == 1


def test_qwen_layout_chat_template_off_without_bos(qwen_tok, gsm8k_dir):
    tok = qwen_tok
    # training row: input + "\n\n" + response + <|im_end|>; the tokenizer has no BOS, so none
    ids = encode_example(tok, Q, A, chat_template=False, max_length=1024)
    assert tok.decode(ids) == Q + "\n\n" + A + "<|im_end|>"
    assert ids[0] == tok.convert_tokens_to_ids("A") and ids[-1] == tok.eos_token_id
    assert tok.convert_tokens_to_ids("<|endoftext|>") not in ids
    # GSM8K: plain few-shot text ("Q: ...\nA: ..." blocks), encoded as lm-eval does: no BOS either
    lm, ctx = _gsm8k_context(tok, gsm8k_dir, chat=False)
    assert ctx.startswith("Q: There are 15 trees") and ctx.count("Q: ") == 9
    assert ctx.endswith("A: Let's think step by step.")
    enc = lm.tok_batch_encode([ctx])[0][0].tolist()
    assert enc[0] == tok.convert_tokens_to_ids("Q") and tok.decode(enc[:40]) == ctx[:40]  # nothing before "Q:"
    assert encode_context(tok, ctx) == enc
    assert encode_prompt(tok, Q, chat_template=False) == tok(Q + "\n\n", add_special_tokens=False)["input_ids"]


def test_story_perplexity_scores_the_context_with_one_bos(llama_tok):
    """generation_perplexity on a chat prompt equals a hand computation on [one BOS + prompt]."""
    from mtpsd.evaluation.metrics import generation_perplexity
    from tests.conftest import make_tiny_llama

    tok = llama_tok
    model = make_tiny_llama(VOCAB, dtype=torch.float64)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Write a story."}], tokenize=False,
                                     add_generation_prompt=True)
    story = "Once there was a cat."
    (ppl,) = generation_perplexity(model, tok, [prompt], [story])
    ctx = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ctx.count(tok.bos_token_id) == 1
    tgt = tok(story, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + tgt])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, len(ctx) - 1:-1], -1)
    nll = -logp.gather(1, ids[0, len(ctx):, None]).mean()
    assert ppl == pytest.approx(float(torch.exp(nll)), rel=1e-5)  # the metric scores fp32 logits


def _gsm8k_instances(lm, gsm8k_dir, *, chat: bool):
    from mtpsd.evaluation.evaluate import task_config, task_manager

    task = task_manager().load([task_config("mtpsd_gsm8k_cot", gsm8k_dir / "test.jsonl",
                                            max_gen_toks=3)])["tasks"]["mtpsd_gsm8k_cot"]
    task.build_all_requests(limit=2, apply_chat_template=chat, fewshot_as_multiturn=chat,
                            chat_template=lm.apply_chat_template if chat else None, tokenizer_name="stand-in")
    return task.instances


def test_chat_off_evaluation_prompt_is_input_then_a_blank_line(qwen_tok, llama_tok, gsm8k_dir, monkeypatch):
    """method.md section 4 (the paper's appendix, "Chat Templating"): with the chat template off the
    model sees input + "\\n\\n" + response, in training and at evaluation. lm-eval's GSM8K context ends
    in "...step by step."; the decoder gets it followed by "\\n\\n" (and the tokenizer's BOS only: the
    Qwen-style one has none). With the template on (Llama) the context is left as lm-eval builds it."""
    from mtpsd.evaluation.lm_eval_adapter import MTPLM
    from tests.conftest import make_tiny_llama

    seen = []
    real = MTPLM._model_generate

    def spy(self, context, max_length, stop, **kw):
        seen.append(context[0].tolist())
        return real(self, context, max_length, stop, **kw)

    monkeypatch.setattr(MTPLM, "_model_generate", spy)
    model = make_tiny_llama(VOCAB, dtype=torch.float32, mtp_token_id=qwen_tok.convert_tokens_to_ids("<MTP>"))
    lm = MTPLM(pretrained=model, tokenizer=qwen_tok, strategy="static", k=1, batch_size=1, max_gen_toks=3,
               plain_prompt=True)
    insts = _gsm8k_instances(lm, gsm8k_dir, chat=False)
    lm.generate_until(insts)
    for inst in insts:  # the logged request shows the prompt the model saw
        assert inst.args[0].endswith("A: Let's think step by step.\n\n") and not inst.args[0].endswith("\n\n\n")
    ids = seen[-1]
    # (the stand-in model holds 512 positions: lm-eval keeps the prompt's last 509 tokens)
    assert qwen_tok.decode(ids).endswith("step by step.\n\n") and qwen_tok.convert_tokens_to_ids("<|endoftext|>") not in ids
    assert ids[-2:] == qwen_tok("\n\n", add_special_tokens=False)["input_ids"]
    assert lm.decode_stats()["plain_prompt"] is True
    # a context that already ends in a blank line (the tiny model's synthetic math) is kept
    (inst,) = insts[:1]
    inst.arguments = ("12 + 30 = ?\n\n", inst.arguments[1])
    lm.generate_until([inst])
    assert inst.args[0] == "12 + 30 = ?\n\n"
    # chat template on: lm-eval's templated context, unchanged
    on = MTPLM(pretrained=make_tiny_llama(VOCAB, dtype=torch.float32), tokenizer=llama_tok, strategy="static", k=1,
               batch_size=1, max_gen_toks=3)
    chat = _gsm8k_instances(on, gsm8k_dir, chat=True)
    before = [i.args[0] for i in chat]
    on.generate_until(chat)
    assert [i.args[0] for i in chat] == before and before[0].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
