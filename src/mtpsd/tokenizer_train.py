"""Train the tiny model's tokenizer on the synthetic corpus (HF ``tokenizers``).

Byte-level BPE with every digit split into its own token: numbers are spelled digit by
digit, so ``<<72*6=432>>`` is arithmetic over single digits, which a small model learns far
faster than over arbitrary multi-digit merges. Special tokens, in id order::

    0 <|pad|>  1 <|bos|>  2 <|eos|>  3..6 <|reserved_0|> .. <|reserved_3|>

The reserved tokens are unused during pretraining; ``add-mtp-token`` can give ``<MTP>``
one of those slots. Saved as a plain ``PreTrainedTokenizerFast`` (``save_pretrained``),
which ``AutoTokenizer.from_pretrained`` loads; tokenizing adds BOS in front.
"""

from __future__ import annotations

from collections.abc import Iterable

from mtpsd.errors import MtpsdError

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
RESERVED = [f"<|reserved_{i}|>" for i in range(4)]
SPECIAL_TOKENS = [PAD, BOS, EOS, *RESERVED]


def train_tokenizer(texts: Iterable[str], *, vocab_size: int):
    """A ``PreTrainedTokenizerFast`` trained on ``texts`` with ``vocab_size`` entries (at most)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    base = 256 + len(SPECIAL_TOKENS)  # full byte alphabet: any text stays encodable
    if vocab_size <= base:
        raise MtpsdError(f"model.tiny.vocab_size={vocab_size}: must exceed {base} (bytes + special tokens)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=RESERVED, padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    return fast
