"""Prompt formatting, training-text encoding and answer extraction (one place for all).

Two formats (method.md section 4, "chat template on/off"):

- chat template off: ``BOS + question + "\\n\\n" + answer + EOS`` (Qwen3 setting, tiny model);
- chat template on: the tokenizer's chat template with the question as the user turn and
  the answer as the assistant turn, ending in EOS (Llama-3.1-Magpie, SmolLM2).

The prompt part is tokenized exactly as it is at inference (``format_prompt`` then the
tokenizer), and the answer is tokenized separately and appended, so the training text
and a decoding prompt share the same prompt token ids.
"""

from __future__ import annotations

import re

from mtpsd.errors import MtpsdError

_FINAL_RE = re.compile(r"####\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)")
# MetaMathQA's ending (kept verbatim in its training rows)
_THE_ANSWER_RE = re.compile(r"The answer is:?\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)")


def require_eos(tokenizer, where: str = "tokenizer") -> int:
    """The tokenizer's EOS id; a tokenizer without one cannot end a training text."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise MtpsdError(
            f"{where}: tokenizer has no EOS token (eos_token is None); training texts must end "
            "in EOS so the model learns to stop. Set eos_token when saving the tokenizer."
        )
    return int(eos)


def format_prompt(tokenizer, question: str, *, chat_template: bool) -> str:
    """The prompt text a model sees before its answer.

    chat_template on: the user turn plus the generation prompt of the tokenizer's template;
    off: ``question + "\\n\\n"`` (the BOS token is added when the text is tokenized).
    """
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise MtpsdError("model.chat_template is true but the tokenizer has no chat template")
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return question + "\n\n"


def encode_prompt(tokenizer, question: str, *, chat_template: bool) -> list[int]:
    """Token ids of the prompt exactly as a decoder receives them (BOS included when off)."""
    text = format_prompt(tokenizer, question, chat_template=chat_template)
    # The chat template writes its own BOS (if any); plain prompts get it from tokenization.
    return list(tokenizer(text, add_special_tokens=not chat_template)["input_ids"])


def encode_context(tokenizer, text: str) -> list[int]:
    """Token ids of an already formatted prompt exactly as lm-eval's HFLM encodes it: with the
    tokenizer's special tokens (its BOS, if it adds one), except when the text already starts
    with the BOS string (a chat template wrote it), so a prompt never gets two BOS."""
    bos = getattr(tokenizer, "bos_token", None)
    add = not (isinstance(bos, str) and bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add)["input_ids"])


def encode_example(tokenizer, question: str, answer: str, *, chat_template: bool,
                   max_length: int) -> list[int]:
    """Token ids of one full training text, truncated to ``max_length``.

    ids = encode_prompt(question) + tokens(answer) + [EOS]; with a chat template, EOS is the
    template's end-of-turn token (ChatML ``<|im_end|>``, Llama 3 ``<|eot_id|>``).
    """
    eos = require_eos(tokenizer)
    if max_length < 2:
        raise MtpsdError(f"max_length={max_length}: must be >= 2")
    ids = encode_prompt(tokenizer, question, chat_template=chat_template)
    ids += list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    ids.append(eos)
    return ids[:max_length]


def format_training_text(tokenizer, question: str, answer: str, *, chat_template: bool) -> str:
    """The training text as a string (prompt + answer + EOS text; BOS not included when off)."""
    require_eos(tokenizer)
    return format_prompt(tokenizer, question, chat_template=chat_template) + answer + tokenizer.eos_token


def normalize_number(text: str) -> str | None:
    """``"$1,234.00"`` -> ``"1234"``; ``"2.50"`` -> ``"2.5"``; non-numbers -> None."""
    text = text.strip().replace(",", "").replace("$", "").rstrip(".")
    if not re.fullmatch(r"-?[0-9]+(?:\.[0-9]+)?", text):
        return None
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def extract_answer(text: str) -> str | None:
    """The number after the last ``####`` (GSM8K), else after the last ``The answer is:``
    (MetaMathQA); commas, ``$`` and a trailing ``.0`` removed. None without either."""
    hits = _FINAL_RE.findall(text) or _THE_ANSWER_RE.findall(text)
    if not hits:
        return None
    return normalize_number(hits[-1])
