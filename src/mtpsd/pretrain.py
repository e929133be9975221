"""The tiny from-scratch base model: tokenizer + small Llama trained with next-token loss.

This stands in for the paper's pretrained base models (method.md section 2) in the
offline default: it must *solve* the synthetic problems greedily, so that turning it into
an MTP model has a measurable quality to keep.

Training objective (plain NTP): for a packed token stream ``x_0 .. x_{L-1}``,

    loss = -1/(L-1) * sum_t log p_theta(x_{t+1} | x_{<=t})

over rows of ``L = model.pretrain.max_length`` tokens cut from the concatenation of
``encode_example(..., chat_template=False)`` texts (``BOS q "\\n\\n" a EOS``), reshuffled
every epoch. No padding is needed, so every token of every batch is trained on.
AdamW, linear warm-up then cosine decay to 10% of the peak learning rate.

Usage::

    from mtpsd.pretrain import pretrain_base
    metrics = pretrain_base(cfg, train_rows, validation_rows, test_rows, out_dir)
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mtpsd.data.prompts import encode_example, encode_prompt, extract_answer, require_eos
from mtpsd.errors import MtpsdError
from mtpsd.io import atomic_write_json, provenance
from mtpsd.tokenizer_train import train_tokenizer


def build_model(tiny, tokenizer, *, seed: int):
    """A randomly initialised ``LlamaForCausalLM`` with the sizes of ``model.tiny``.

    The vocabulary is the tokenizer's size (``tiny.vocab_size`` caps the BPE trainer);
    input and output embeddings are tied (fewer parameters for a tiny model).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=tiny.hidden_size, intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers, num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads, max_position_embeddings=tiny.max_position_embeddings,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=require_eos(tokenizer), pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def pack(sequences: list[list[int]], length: int, *, generator: torch.Generator) -> torch.Tensor:
    """Shuffle ``sequences``, concatenate them and cut rows of ``length`` tokens: (R, length)."""
    order = torch.randperm(len(sequences), generator=generator).tolist()
    stream = [t for i in order for t in sequences[i]]
    rows = len(stream) // length
    if rows == 0:
        raise MtpsdError(f"training data has {len(stream)} tokens, fewer than one row of {length}")
    return torch.tensor(stream[: rows * length], dtype=torch.long).view(rows, length)


def lr_at(step: int, *, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``peak / 10``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def evaluate_loss(model, sequences: list[list[int]], length: int, *, batch_size: int = 32) -> float:
    """Mean next-token loss on packed rows of ``sequences`` (fixed order)."""
    g = torch.Generator().manual_seed(0)
    data = pack(sequences, length, generator=g)
    model.eval()
    losses = [model(input_ids=b, labels=b).loss.item() for b in data.split(batch_size)]
    return float(sum(losses) / len(losses))


@torch.no_grad()
def evaluate_accuracy(model, tokenizer, rows: list[dict], *, chat_template: bool = False,
                      batch_size: int = 64, max_new_tokens: int = 128) -> dict:
    """Greedy exact-final-answer accuracy: ``extract_answer(generation) == extract_answer(gold)``.

    Prompts are left-padded into batches and decoded with ``model.generate`` (greedy).
    """
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else require_eos(tokenizer)
    correct, samples = 0, []
    for start in tqdm(range(0, len(rows), batch_size), desc="greedy eval", leave=False):
        batch = rows[start:start + batch_size]
        prompts = [encode_prompt(tokenizer, r["question"], chat_template=chat_template) for r in batch]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # (B, T) left padded
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad,
                             eos_token_id=require_eos(tokenizer))
        for r, seq in zip(batch, out[:, width:]):  # (B, new)
            text = tokenizer.decode(seq, skip_special_tokens=True)
            pred, gold = extract_answer(text), extract_answer(r["answer"])
            correct += int(pred is not None and pred == gold)
            if len(samples) < 5:
                samples.append({"id": r["id"], "generation": text, "prediction": pred, "gold": gold})
    return {"accuracy": correct / max(1, len(rows)), "correct": correct, "n": len(rows), "samples": samples}


def _train_loop(model, sequences: list[list[int]], pc, *, seed: int) -> tuple[list[float], float]:
    """Next-token training for ``pc.steps`` AdamW steps; returns (per-step losses, seconds)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=pc.lr, betas=(0.9, 0.95), weight_decay=pc.weight_decay)
    data, cursor, losses = pack(sequences, pc.max_length, generator=gen), 0, []
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(pc.steps), desc="pretrain", mininterval=2.0)
    for step in bar:
        if cursor + pc.batch_size > len(data):  # next epoch: reshuffle and repack
            data, cursor = pack(sequences, pc.max_length, generator=gen), 0
        batch = data[cursor:cursor + pc.batch_size]  # (B, L)
        cursor += pc.batch_size
        for group in opt.param_groups:
            group["lr"] = lr_at(step, peak=pc.lr, warmup=pc.warmup_steps, total=pc.steps)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses, time.perf_counter() - t0


def _curve_summary(losses: list[float], points: int = 20) -> list[dict]:
    """The loss curve as ``points`` windows: ``{"step": last step, "loss": window mean}``."""
    size = max(1, len(losses) // points)
    return [{"step": min(i + size, len(losses)), "loss": sum(losses[i:i + size]) / len(losses[i:i + size])}
            for i in range(0, len(losses), size)]


def pretrain_base(cfg, train_rows: list[dict], validation_rows: list[dict], test_rows: list[dict],
                  out_dir: str | Path, *, threads: int | None = None) -> dict:
    """Train tokenizer and model on ``train_rows``; save both to ``out_dir``; return metrics.

    ``cfg`` is the root ``Config``; ``cfg.model.tiny`` and ``cfg.model.pretrain`` are used.
    Writes ``out_dir/base_metrics.json`` (loss curve, validation loss, greedy test accuracy,
    wall times, provenance). The model is saved in float32.
    """
    if threads:
        torch.set_num_threads(threads)
    tiny, pc = cfg.model.tiny, cfg.model.pretrain
    if not train_rows:
        raise MtpsdError("pretrain-base: the training set is empty")
    t_start = time.perf_counter()
    texts = [r["question"] + "\n\n" + r["answer"] for r in train_rows]
    tokenizer = train_tokenizer(texts, vocab_size=tiny.vocab_size)
    model = build_model(tiny, tokenizer, seed=cfg.seed)
    encode = lambda rows: [encode_example(tokenizer, r["question"], r["answer"], chat_template=False,  # noqa: E731
                                          max_length=pc.max_length) for r in rows]
    train_seqs = encode(train_rows)
    losses, train_s = _train_loop(model, train_seqs, pc, seed=cfg.seed)
    val_loss = evaluate_loss(model, encode(validation_rows), pc.max_length) if validation_rows else None
    t_eval = time.perf_counter()
    acc = evaluate_accuracy(model, tokenizer, test_rows, max_new_tokens=pc.eval_max_new_tokens)
    eval_s = time.perf_counter() - t_eval
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    metrics = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "train_examples": len(train_rows),
        "train_tokens_per_step": pc.batch_size * pc.max_length,
        "steps": pc.steps,
        "epochs": pc.steps * pc.batch_size * pc.max_length / max(1, sum(map(len, train_seqs))),
        "loss_first": losses[0],
        "loss_final": sum(losses[-20:]) / len(losses[-20:]),
        "loss_curve": _curve_summary(losses),
        "validation_loss": val_loss,
        "test_accuracy": acc["accuracy"],
        "test_correct": acc["correct"],
        "test_n": acc["n"],
        "test_samples": acc["samples"],
        "train_wall_s": train_s,
        "eval_wall_s": eval_s,
        "total_wall_s": time.perf_counter() - t_start,
        "torch_threads": torch.get_num_threads(),
        "provenance": provenance(seed=cfg.seed, config=cfg),
    }
    atomic_write_json(out_dir / "base_metrics.json", metrics)
    return metrics
