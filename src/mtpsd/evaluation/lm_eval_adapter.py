"""lm-eval model ``mtpsd``: HFLM whose generation goes through ``mtpsd.decoding``.

Only ``_model_generate`` is overridden: lm-eval's ``generate_until`` still encodes,
left-pads, batches, decodes and cuts the text at the ``until`` strings; every batch goes
through one decoder kept per MTPLM (``engine``: "graphs" | "eager" | "reference" | "auto",
``mtpsd.decoding.select``; by default the ``DecodeEngine`` with CUDA graphs on GPU, eager on
CPU), which gets the prompt ids (padding removed),
the ``until`` strings (as stop strings) and the ``max_gen_toks`` budget, and stops at EOS.
``mask_budget`` (tokens per pass, ConfAdapt/verify) is passed to the engine.
``plain_prompt`` (a model evaluated with its chat template off, method.md section 4: input +
"\\n\\n" + response): every generation prompt ends in a blank line, as the model's training texts
do after the input (lm-eval's context gets "\\n\\n" unless it already ends with one); BOS is the
tokenizer's own, as lm-eval encodes it.

``batch_planner`` (``mtpsd evaluate`` with ``eval.batch_size: null``): before decoding, the
batch is re-planned from the longest tokenized request and the largest budget
(``mtpsd.evaluation.memory_plan``), so the cache the engine allocates fits the device.
Log-likelihood requests are inherited unchanged (they are NTP scores: real tokens
never see ``<MTP>``).

    lm_eval --model mtpsd --model_args pretrained=DIR,strategy=confadapt,k=16,tau=0.9 ...
    # (lm_eval must import mtpsd.evaluation.lm_eval_adapter first, e.g. via --include_path or python)

    lm = MTPLM(pretrained=model, tokenizer=tok, strategy="static", k=1, batch_size=1)
    simple_evaluate(model=lm, tasks=[...]); lm.decode_stats()

Statistics (method.md section 6): effective k = generated tokens / forward passes,
pooled over every decoding step of every generation; its spread is the SD of the
pooled chunk sizes.

``convention`` ("project" | "authors", ``mtpsd.decoding.common.Convention``): the tokens
handed back to lm-eval are those of the convention's accounting (the authors': an end id
keeps the rest of its chunk and stop strings only cut the text, which lm-eval does after
decoding). Each generation decodes until both accountings have ended, so ``decode_stats``
carries effective k both ways (``eff_k_project``, ``eff_k_authors``) from one run; with the
project's convention, rows stopped by a stop string go on (uncounted in the project's
numbers) to an end id or the budget for the authors' count.
"""

from __future__ import annotations

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from mtpsd.decoding.common import GenerationResult, as_convention, check_args
from mtpsd.decoding.select import decoder_for, resolve_engine
from mtpsd.decoding.stats import pooled_stats
from mtpsd.errors import MtpsdError
from mtpsd.vocab import end_token_ids


@register_model("mtpsd")
class MTPLM(HFLM):
    """HFLM decoding with Static-k, ConfAdapt or lossless verify (greedy only)."""

    def __init__(self, pretrained, strategy: str = "confadapt", k: int = 16, tau: float = 0.9,
                 max_gen_toks: int = 256, mtp_token_id: int | None = None, mask_budget: int | None = None,
                 engine: str = "auto", plain_prompt: bool | str = False, convention: str = "project",
                 batch_planner=None, **kwargs):
        super().__init__(pretrained=pretrained, **kwargs)
        self.plain_prompt = str(plain_prompt).lower() in ("1", "true", "yes")
        self.batch_planner = batch_planner  # (longest prompt, budget) -> batch; None: keep batch_size
        self.planned: dict | None = None  # what the last re-plan saw and chose
        self.engine = resolve_engine(engine, self.model.device)  # recorded in decode_stats
        self.convention = as_convention(convention).name
        self.strategy, self.k, self.tau = str(strategy), int(k), float(tau)
        self.mask_budget = None if mask_budget in (None, "", "None") else int(mask_budget)
        self._max_gen_toks = int(max_gen_toks)
        if mtp_token_id is None:
            mtp_token_id = getattr(self.model.config, "mtp_token_id", None)
        self.mtp_token_id = None if mtp_token_id is None else int(mtp_token_id)
        check_args(self.strategy, self.k, self.tau, self._max_gen_toks, self.mtp_token_id, (), None)
        self.results: list[GenerationResult] = []

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    def _stop_ids(self) -> tuple[int, ...]:
        ids = set(end_token_ids(self.model, self.tokenizer))
        if self.eot_token_id is not None:
            ids.add(int(self.eot_token_id))
        return tuple(sorted(ids))

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """lm-eval's generate_until, at the batch the memory plan gives for these requests; with
        ``plain_prompt`` each context first ends in "\\n\\n" (the request is changed in place, so
        the logged sample shows the prompt the model saw)."""
        if self.plain_prompt:
            for req in requests:
                context, *rest = req.arguments
                if not context.endswith("\n\n"):
                    req.arguments = (context + "\n\n", *rest)
        if self.batch_planner is not None and requests:
            from lm_eval.models.utils import normalize_gen_kwargs

            # + 1: the BOS lm-eval may add when it encodes a batch
            longest = 1 + max(len(self.tok_encode(r.args[0])) for r in requests)
            budget = max(normalize_gen_kwargs(dict(r.args[1]), self.max_gen_toks)["max_gen_toks"] for r in requests)
            self.batch_size_per_gpu = int(self.batch_planner(longest, budget))
            self.planned = {"longest_prompt": longest, "budget": budget, "batch_size": self.batch_size_per_gpu}
        return super().generate_until(requests, disable_tqdm=disable_tqdm)

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str],
                        **generation_kwargs) -> torch.Tensor:
        """``context`` (B, T) left-padded -> (B, T + max_new) ids: prompt, new tokens, EOS fill."""
        attn = generation_kwargs.pop("attention_mask", None)
        temperature = generation_kwargs.pop("temperature", 0.0) or 0.0
        if generation_kwargs.pop("do_sample", False) or temperature > 0:
            raise MtpsdError(
                f"mtpsd decodes greedily; task asked for sampling (temperature={temperature}, "
                f"do_sample=True): set do_sample false in the task's generation_kwargs"
            )
        B, T = context.shape
        max_new = max_length - T
        rows = context.tolist() if attn is None else [r[m.bool()].tolist() for r, m in zip(context, attn)]
        engine = decoder_for(self.model, self.mtp_token_id, engine=self.engine, batch=B,
                             seq_len=T + max_new + 2 * self.k, holder=self, mask_budget=self.mask_budget)
        results = engine.generate(rows, strategy=self.strategy, k=self.k, tau=self.tau, max_new_tokens=max_new,
                                  stop_token_ids=self._stop_ids(), stop_strings=tuple(stop), tokenizer=self.tokenizer,
                                  convention=self.convention)
        self.results.extend(results)
        fill = self.eot_token_id if self.eot_token_id is not None else 0
        out = torch.full((B, T + max_new), fill, dtype=torch.long, device=context.device)
        out[:, :T] = context
        for b, r in enumerate(results):
            if r.tokens:
                out[b, T: T + len(r.tokens)] = torch.tensor(r.tokens, dtype=torch.long)
        return out

    def reset_stats(self) -> None:
        self.results = []

    def decode_stats(self) -> dict:
        """Pooled decoding statistics over all generations since construction / ``reset_stats``
        (``mtpsd.decoding.stats.pooled_stats`` plus the setting)."""
        tau = self.tau if self.strategy == "confadapt" else None
        eng = self.__dict__.get("_mtpsd_engine")  # the DecodeEngine decoder_for keeps on this MTPLM
        counters = {"engine_counters": dict(eng.counters)} if eng is not None and self.engine != "reference" else {}
        return {"strategy": self.strategy, "k": self.k, "tau": tau, "mask_budget": self.mask_budget,
                "plain_prompt": self.plain_prompt, "engine": self.engine, "convention": self.convention, **counters,
                **pooled_stats(self.results)}
