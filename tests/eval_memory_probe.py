"""Peak RSS increase of one batched engine call on a real architecture at reduced depth, in a
fresh process (for test_eval_memory_plan).

    python -m tests.eval_memory_probe ARCH_JSON LAYERS BATCH PROMPT BUDGET K
        ->  prints {"increase", "rows", "slots", "cache_bytes", "passes"} (bytes)

The model (random weights, float32) is built and warmed up before the baseline, so the
increase is what the evaluation plan counts beside the weights: the KV cache the engine
allocates and its largest pass. Every id is a stop id, so each row stops after its first pass
(the cache is still sized for the whole budget; the first pass is the largest the plan
expects for these sizes). Run with ``MALLOC_MMAP_THRESHOLD_=65536`` (freed tensors go back to
the OS), one thread.
"""

from __future__ import annotations

import gc
import json
import sys

import torch

from tests.memory_probe import _peak, _reset_peak, _rss


def main(arch: str, layers: str, batch: str, prompt: str, budget: str, k: str) -> None:
    torch.set_num_threads(1)
    from transformers import AutoConfig, AutoModelForCausalLM

    from mtpsd.decoding.engine import engine_for

    data = json.loads(open(arch).read())
    data["num_hidden_layers"] = int(layers)
    cfg = AutoConfig.for_model(**data)
    from transformers.initialization import no_init_weights

    torch.manual_seed(0)
    with no_init_weights():  # HF's initialisation of 0.6B parameters takes a minute on one thread
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():  # small random weights, every page touched before the baseline
            p.uniform_(-0.02, 0.02)
    B, P, N, K = int(batch), int(prompt), int(budget), int(k)
    mtp = cfg.vocab_size - 1
    with torch.no_grad():  # warm-up: kernels and allocator paths, freed again
        model(input_ids=torch.ones(1, 8, dtype=torch.long))
    gc.collect()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, mtp, (P,), generator=g).tolist() for _ in range(B)]
    base = _rss()
    assert _reset_peak()
    eng = engine_for(model, mtp, batch=B, seq_len=P + N + 2 * K)
    res = eng.generate(prompts, strategy="static", k=K, max_new_tokens=N, stop_token_ids=tuple(range(cfg.vocab_size)))
    peak = _peak()
    print(json.dumps({"increase": peak - base, "rows": eng._cache.rows, "slots": eng._cache.slots,
                      "cache_bytes": eng._cache.nbytes, "passes": eng.counters["passes"],
                      "tokens": [len(r.tokens) for r in res]}))


if __name__ == "__main__":
    main(*sys.argv[1:7])
