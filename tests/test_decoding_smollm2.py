"""SmolLM2-135M-Instruct (fp32, CPU): static k=1 and verify reproduce HF greedy on GSM8K prompts."""

from __future__ import annotations

import json

import pytest
import torch

from mtpsd.decoding import generate

N_NEW = 32


@pytest.mark.slow
def test_smollm2_k1_and_verify_equal_hf_greedy(smollm2_gguf, gsm8k_dir):
    from mtpsd.data.prompts import encode_prompt
    from mtpsd.mtp_token import add_mtp_token, load_base

    torch.set_num_threads(1)
    model, tok = load_base(str(smollm2_gguf), dtype=torch.float32)
    mtp = add_mtp_token(model, tok, seed=0)
    model.eval()
    rows = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()[:2]]
    banned = sorted(set(range(len(tok), model.get_output_embeddings().weight.shape[0])) | {mtp})
    for row in rows:
        ids = torch.tensor([encode_prompt(tok, row["question"], chat_template=True)])
        ref = model.generate(ids, do_sample=False, max_new_tokens=N_NEW, suppress_tokens=banned,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)[0, ids.shape[1]:].tolist()
        for strategy, k in (("static", 1), ("verify", 2), ("verify", 4)):
            res = generate(model, ids, mtp_token_id=mtp, strategy=strategy, k=k, max_new_tokens=N_NEW,
                           stop_token_ids=(tok.eos_token_id,), tokenizer=tok)
            assert res.tokens == ref, (strategy, k)
