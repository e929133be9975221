"""Data: synthetic GSM8K-style problems, MetaMathQA/GSM8K loaders, seed-stratified split,
prompt formatting. Rows everywhere are ``{"id", "question", "answer", "seed_id"}``; answers
keep their source's format (``#### N`` for GSM8K and synthetic, ``The answer is: N`` for
MetaMathQA), both read by ``extract_answer``."""

from mtpsd.data.prompts import (
    encode_context,
    encode_example,
    encode_prompt,
    extract_answer,
    format_prompt,
    format_training_text,
    require_eos,
)

__all__ = ["encode_context", "encode_example", "encode_prompt", "extract_answer", "format_prompt",
           "format_training_text", "require_eos"]
