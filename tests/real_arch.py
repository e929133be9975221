"""The paper's two architectures at reduced depth, with random weights: the exact published
configs (``benchmarks/arch/``: Llama-3.1-8B with GQA 32/8, head_dim 128 and llama3 RoPE scaling,
its vocabulary padded to 128384 rows as the authors' checkpoint has it, ``<MTP>`` = 128259;
Qwen3-4B-Instruct-2507 with q/k norms, tied embeddings, vocabulary 151936, ``<MTP>`` = 151669)
with ``num_hidden_layers`` cut to ``layers``. Real vocabularies and ids at a size a CPU holds:
2 layers of Llama are 1.5B parameters (6 GB in float32), of Qwen3 0.6B."""

from __future__ import annotations

import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
ARCHS = {  # name: (config file, overrides, <MTP> id)
    "llama31_8b": ("benchmarks/arch/llama31_8b.json", {"vocab_size": 128384}, 128259),
    "qwen3_4b": ("benchmarks/arch/qwen3_4b.json", {}, 151669),
}


def real_config(name: str, layers: int = 2):
    from transformers import AutoConfig

    path, overrides, mtp = ARCHS[name]
    values = {**json.loads((REPO / path).read_text()), **overrides, "num_hidden_layers": layers}
    values.pop("architectures", None)
    cfg = AutoConfig.for_model(values.pop("model_type"), **values)  # built at depth: layer_types follow
    cfg.mtp_token_id = mtp
    return cfg


def real_model(name: str, *, layers: int = 2, dtype=torch.float32, device="cpu", seed: int = 0,
               logit_scale: float = 1.0):
    """A random model of the real config (``layers`` deep) in ``dtype`` on ``device``: matrices
    uniform with the standard deviation of HF's init (0.02; uniform draws are several times
    faster than normal ones at a billion parameters), norms 1. ``logit_scale`` multiplies the
    un-embedding (a random 4096-wide model is near-uniform over 128k ids; a sharper read-out
    makes ConfAdapt chunks vary)."""
    from transformers import AutoModelForCausalLM

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5.20 (the GPU machine's 5.17)
        from transformers.modeling_utils import no_init_weights

    cfg = real_config(name, layers)
    with no_init_weights(), torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    model.tie_weights()  # Qwen3 ties its embeddings; no_init_weights skips the tying post_init does
    gen = torch.Generator(device=device).manual_seed(seed)
    half_width = 0.02 * 3 ** 0.5
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.uniform_(-half_width, half_width, generator=gen)
        if logit_scale != 1.0:
            model.get_output_embeddings().weight.mul_(logit_scale)
    return model.eval().requires_grad_(False)
