"""Data: synthetic GSM8K-style problems, MetaMathQA/GSM8K loaders, seed-stratified split,
prompt formatting. Rows everywhere are ``{"id", "question", "answer", "seed_id"}`` with
answers ending in ``#### N``."""

from mtpsd.data.prompts import (
    encode_example,
    encode_prompt,
    extract_answer,
    format_prompt,
    format_training_text,
    require_eos,
)

__all__ = ["encode_example", "encode_prompt", "extract_answer", "format_prompt",
           "format_training_text", "require_eos"]
