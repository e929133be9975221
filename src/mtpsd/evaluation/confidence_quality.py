"""Student confidence vs quality of its k-token proposal under the teacher (figure 6 data).

For N validation examples (fixed seed) we tokenize the training text
(``mtpsd.data.prompts.encode_example``), cut it at a random point ``c`` inside the answer
and let the student propose k tokens in one forward pass (method.md sections 1, 6):

    student input  x_{<c} [MTP]*(k-1)        (L = c + k - 1; positions 0..L-1 and the mask
                                               the student decodes with: causal, or the
                                               masks both ways for a BDA checkpoint)
    y'_j = argmax P_S(. | read-out j),  j = 1..k   (<MTP> and vocab padding banned)
    conf_j = max P_S(. | read-out j)
    teacher input  x_{<c} y'_1 .. y'_{k-1}
    nll_j = -log P_T(y'_j | x_{<c}, y'_{<j})  (teacher logits at positions c-1 .. c+k-2)

Row output: conf_mean = mean_j conf_j, conf_min = min_j conf_j, conf_prod = prod_j conf_j,
teacher_nll_mean = mean_j nll_j, teacher_agreement = mean_j [argmax P_T = y'_j].
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from mtpsd.checkpoint import load_checkpoint, mtp_token_id_of
from mtpsd.data.prompts import encode_example, encode_prompt
from mtpsd.decoding.common import mtp_attention, step_attention_mask
from mtpsd.errors import MtpsdError
from mtpsd.io import read_jsonl
from mtpsd.vocab import banned_token_ids, suppress


@torch.no_grad()
def score_prefix(student, teacher, prefix: list[int], *, k: int, mtp_token_id: int,
                 banned: list[int]) -> dict:
    """Confidences and teacher NLLs of the student's k-token proposal after ``prefix``."""
    dev = next(student.parameters()).device
    c = len(prefix)
    x = torch.tensor([prefix + [mtp_token_id] * (k - 1)], device=dev)  # (1, c+k-1)
    mask = None
    if mtp_attention(student) == "bidirectional":
        mask = step_attention_mask(torch.ones_like(x, dtype=torch.bool), x.shape[1], k - 1)
    logits = suppress(student(input_ids=x, attention_mask=mask).logits[0, c - 1:].float(), banned)  # (k, V)
    probs = logits.softmax(-1)
    conf, y = probs.max(-1)  # (k,), (k,)
    t_in = torch.tensor([prefix + y[:k - 1].tolist()], device=dev)  # (1, c+k-1)
    t_logp = suppress(teacher(input_ids=t_in).logits[0, c - 1:].float(), banned).log_softmax(-1)  # (k, V)
    nll = -t_logp.gather(-1, y[:, None])[:, 0]  # (k,)
    return {
        "conf_mean": float(conf.mean()), "conf_min": float(conf.min()), "conf_prod": float(conf.prod()),
        "teacher_nll_mean": float(nll.mean()), "teacher_nll_max": float(nll.max()),
        "teacher_agreement": float((t_logp.argmax(-1) == y).float().mean()),
        "proposal": y.tolist(), "conf_per_pos": conf.tolist(), "nll_per_pos": nll.tolist(),
    }


def confidence_quality(student_dir: str | Path, teacher_dir: str | Path, data: str | Path, *, k: int,
                       n: int, chat_template: bool, max_length: int, seed: int = 0,
                       device: str | None = None) -> pd.DataFrame:
    """One row per validation prefix (see module docstring); ``n`` examples drawn with ``seed``."""
    if k < 2:
        raise MtpsdError(f"--k {k}: must be >= 2 (k=1 has no mask positions)")
    rows = read_jsonl(data, required=("question", "answer"))
    if not rows:
        raise MtpsdError(f"{data}: no examples")
    torch.manual_seed(seed)
    student, tok = load_checkpoint(student_dir, device=device)
    teacher, _ = load_checkpoint(teacher_dir, device=device)
    mtp = mtp_token_id_of(student)
    banned = banned_token_ids(student.get_output_embeddings().weight.shape[0], len(tok), mtp)
    rng = random.Random(seed)
    picks = rng.sample(range(len(rows)), min(n, len(rows)))
    out = []
    for i in tqdm(picks, desc="confidence-quality", unit="prefix"):
        ex = rows[i]
        ids = encode_example(tok, ex["question"], ex["answer"], chat_template=chat_template,
                             max_length=max_length)
        start = len(encode_prompt(tok, ex["question"], chat_template=chat_template))
        if len(ids) - k <= start:
            continue  # answer shorter than k tokens after truncation: no cut point
        cut = rng.randint(start, len(ids) - k)  # prefix = ids[:cut] ends inside prompt+answer
        res = score_prefix(student, teacher, ids[:cut], k=k, mtp_token_id=mtp, banned=banned)
        for key in ("proposal", "conf_per_pos", "nll_per_pos"):
            res[key] = " ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in res[key])
        out.append({"example_id": ex.get("id", i), "cut": cut, "k": k, **res})
    if not out:
        raise MtpsdError(f"{data}: no example has an answer of >= {k} tokens within max_length={max_length}")
    return pd.DataFrame(out)
