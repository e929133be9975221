"""FlexAttention option: the BlockMask equals the dense packed mask, and flex gives the
sdpa loss. On CPU torch 2.13 has FlexAttention forward but no backward, so the CPU test
compares forward losses (no grad, eager flex kernel); the CUDA test (skipped without a
GPU) runs the real compiled kernel and compares loss and gradients."""

from __future__ import annotations

import warnings

import pytest
import torch

from mtpsd.errors import MtpsdError
from mtpsd.flex import (attention_mask_for, layout_mask_mod, resolve_attn_implementation,
                        student_is_causal)
from mtpsd.layout import build_layout, sample_batch_layout
from mtpsd.objective import mtp_loss_from_layout

flex_mod = pytest.importorskip("torch.nn.attention.flex_attention")
V, MTP, EOS = 64, 63, 2


def _layout(seed: int, *, attention: str, B: int = 3, N: int = 40, k_max: int = 6, regions: int = 4,
            device="cpu"):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, MTP, (B, N), generator=g)
    lengths = [N - int(torch.randint(0, N // 2, (1,), generator=g)) for _ in range(B)]
    am = torch.zeros(B, N, dtype=torch.long)
    for b, n in enumerate(lengths):
        am[b, :n] = 1
    if seed % 2:  # an EOS inside row 0: truncated last region, dropped tail
        ids[0, lengths[0] // 2] = EOS
    k, pos = sample_batch_layout(lengths, k_max=k_max, num_regions=regions, random_k=True, generator=g)
    return build_layout(ids.to(device), pos.to(device), k=k, mtp_token_id=MTP, attention=attention,
                        attention_mask=am.to(device), eos_token_id=EOS)


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
@pytest.mark.parametrize("seed", range(6))
def test_mask_mod_equals_dense_mask(seed, attention):
    lay = _layout(seed, attention=attention)
    B, L = lay.input_ids.shape
    for causal, dense in [(True, lay.causal_attn_mask), (False, lay.attn_mask)]:
        if not causal and attention == "causal":
            continue
        got = flex_mod.create_mask(layout_mask_mod(lay, causal=causal), B, 1, L, L, device="cpu")
        assert got.shape == dense.shape
        assert torch.equal(got, dense), (seed, attention, causal)
    assert student_is_causal(lay) == torch.equal(lay.attn_mask, lay.causal_attn_mask)


def test_resolve_attn_implementation_falls_back_on_cpu():
    with pytest.warns(UserWarning, match="flex_attention needs a CUDA device"):
        assert resolve_attn_implementation("flex_attention", "cpu") == "sdpa"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_attn_implementation("sdpa", "cpu") == "sdpa"
    with pytest.raises(MtpsdError, match="attn_implementation='eager'"):
        resolve_attn_implementation("eager", "cpu")


def test_eager_model_is_refused(tiny_llama):
    model = tiny_llama(V, attn_implementation="eager")
    with pytest.raises(MtpsdError, match="'eager'"):
        attention_mask_for(model, _layout(0, attention="causal"), teacher=False)


def _losses(tiny_llama, *, attention, mode, device, dtype, grad):
    """Loss (and student grads) with sdpa and with flex_attention on the same weights."""
    out = {}
    for impl in ("sdpa", "flex_attention"):
        student = tiny_llama(V, seed=1, dtype=dtype, attn_implementation=impl).to(device)
        teacher = tiny_llama(V, seed=1, dtype=dtype, attn_implementation=impl).to(device)
        torch.manual_seed(5)  # the student is "trained": perturb so student != teacher
        with torch.no_grad():
            for p in student.parameters():
                p.add_(0.05 * torch.randn_like(p))
        student.train(grad)
        lay = _layout(3, attention=attention, device=device)
        with torch.set_grad_enabled(grad):
            res = mtp_loss_from_layout(student, teacher, lay, teacher_mode=mode, mtp_token_id=MTP)
            if grad:
                res.loss.backward()
        grads = [p.grad.detach().clone() for p in student.parameters()] if grad else []
        out[impl] = (res.loss.detach(), res.targets, grads)
    return out


@pytest.mark.parametrize("attention,mode", [("causal", "hard"), ("bidirectional", "soft")])
def test_flex_forward_loss_equals_sdpa_cpu(tiny_llama, monkeypatch, attention, mode):
    """CPU: FlexAttention forward (no grad), eager kernel: the HF integration always
    torch.compiles flex, ~18 s per shape on 2 CPU cores; the mask logic is what we test."""
    import transformers.integrations.flex_attention as hf_flex

    calls = []

    def eager_flex(query, key, value, training=False, **kw):
        calls.append(type(kw["block_mask"]).__name__)
        return flex_mod.flex_attention(query, key, value, **kw)

    monkeypatch.setattr(hf_flex, "compile_friendly_flex_attention", eager_flex)
    out = _losses(tiny_llama, attention=attention, mode=mode, device="cpu", dtype=torch.float32, grad=False)
    (l_s, t_s, _), (l_f, t_f, _) = out["sdpa"], out["flex_attention"]
    assert calls and set(calls) == {"BlockMask"}  # 2 layers x (student + teacher)
    assert len(calls) == 4
    assert torch.equal(t_s, t_f)
    torch.testing.assert_close(l_f, l_s, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention backward needs CUDA")
@pytest.mark.parametrize("attention,mode", [("causal", "hard"), ("bidirectional", "soft")])
def test_flex_loss_and_grads_equal_sdpa_cuda(tiny_llama, attention, mode):
    out = _losses(tiny_llama, attention=attention, mode=mode, device="cuda", dtype=torch.float32, grad=True)
    (l_s, t_s, g_s), (l_f, t_f, g_f) = out["sdpa"], out["flex_attention"]
    assert torch.equal(t_s, t_f)
    torch.testing.assert_close(l_f, l_s, rtol=1e-4, atol=1e-4)
    for a, b in zip(g_f, g_s):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
