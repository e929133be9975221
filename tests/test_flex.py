"""FlexAttention option: the BlockMask equals the dense packed mask, and flex gives the
sdpa loss. On CPU torch 2.13 has FlexAttention forward but no backward (it raises), so the
CPU tests compare forward losses; the CUDA tests (skipped without a GPU; the GPU check runs
them) run the real compiled kernel and compare loss and gradients. Every model here has
head_dim 16, the compiled CUDA kernel's minimum (resolve_attn_implementation refuses less)."""

from __future__ import annotations

import warnings

import pytest
import torch

from mtpsd.errors import MtpsdError
from mtpsd.flex import (FLEX_MIN_HEAD_DIM, attention_mask_for, block_sparsity, layout_attention_masks,
                        layout_mask_mod, mask_ids, resolve_attn_implementation, student_is_causal)
from mtpsd.layout import build_layout, sample_batch_layout
from mtpsd.objective import mtp_loss_from_layout

flex_mod = pytest.importorskip("torch.nn.attention.flex_attention")
V, MTP, EOS = 64, 63, 2
HEAD16 = dict(hidden_size=64, num_heads=4)  # head_dim 16: what compiled FlexAttention on CUDA needs


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
        student = tiny_llama(V, seed=1, dtype=dtype, attn_implementation=impl, **HEAD16).to(device)
        teacher = tiny_llama(V, seed=1, dtype=dtype, attn_implementation=impl, **HEAD16).to(device)
        assert student.config.head_dim >= FLEX_MIN_HEAD_DIM
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention backward needs CUDA")
def test_flex_under_bf16_autocast_cuda(tiny_llama):
    """precision mixed: float32 student under bf16 autocast, bf16 teacher; the compiled kernel
    gets q, k, v in one dtype (mixed dtypes raise there) and matches sdpa's loss."""
    out = {}
    for impl in ("sdpa", "flex_attention"):
        student = tiny_llama(V, seed=1, dtype=torch.float32, attn_implementation=impl, **HEAD16).cuda().train()
        teacher = tiny_llama(V, seed=1, dtype=torch.bfloat16, attn_implementation=impl, **HEAD16).cuda()
        lay = _layout(3, attention="causal", device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            res = mtp_loss_from_layout(student, teacher, lay, teacher_mode="hard", mtp_token_id=MTP)
        res.loss.backward()
        out[impl] = float(res.loss)
    assert out["flex_attention"] == pytest.approx(out["sdpa"], rel=2e-2)


def _tiny_cfg(hidden, heads):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=V, hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=1)


def test_small_heads_are_refused_for_cuda_before_loading():
    """The compiled CUDA kernel needs head_dim >= 16: refused from the config alone (no CUDA needed)."""
    with pytest.raises(MtpsdError, match="head_dim is 8.*head_dim >= 16.*sdpa"):
        resolve_attn_implementation("flex_attention", "cuda", _tiny_cfg(32, 4))
    assert resolve_attn_implementation("flex_attention", "cuda", _tiny_cfg(64, 4)) == "flex_attention"
    assert resolve_attn_implementation("sdpa", "cuda", _tiny_cfg(32, 4)) == "sdpa"
    with pytest.warns(UserWarning, match="needs a CUDA device"):  # CPU: sdpa whatever the head
        assert resolve_attn_implementation("flex_attention", "cpu", _tiny_cfg(32, 4)) == "sdpa"


def test_mask_tensors_are_contiguous():
    """Compiled FlexAttention cannot lower a mask function that reads strided views (the layout
    once came from ``table.unbind(-1)``, stride 7); everything the mask reads is contiguous."""
    lay = _layout(1, attention="bidirectional")
    for name in ("input_ids", "position_ids", "region", "offset", "orig_index", "valid", "is_mtp"):
        assert getattr(lay, name).is_contiguous(), name
    for name, t in mask_ids(lay).items():
        assert t.is_contiguous(), name
    strided = torch.stack([lay.region, lay.region], -1)[..., 0]  # a view with stride 2
    assert not strided.is_contiguous()
    import dataclasses

    assert all(t.is_contiguous() for t in mask_ids(dataclasses.replace(lay, region=strided)).values())


def test_one_block_mask_per_layout(tiny_llama, monkeypatch):
    """Student and teacher share one BlockMask when the student's mask is causal; a bidirectional
    layout with k > 2 needs two (one each)."""
    made = []
    real = flex_mod.create_block_mask

    def counted(*a, **kw):
        made.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(flex_mod, "create_block_mask", counted)
    student = tiny_llama(V, attn_implementation="flex_attention", **HEAD16)
    teacher = tiny_llama(V, attn_implementation="flex_attention", **HEAD16)
    lay = _layout(3, attention="causal")
    s_mask, t_mask = layout_attention_masks(student, teacher, lay)
    assert len(made) == 1 and s_mask is t_mask
    bi = _layout(3, attention="bidirectional")
    assert bi.k > 2 and not student_is_causal(bi)
    s_mask, t_mask = layout_attention_masks(student, teacher, bi)
    assert len(made) == 3 and s_mask is not t_mask
    assert layout_attention_masks(student, None, lay)[1] is None and len(made) == 4  # gt mode: no teacher
    sdpa = tiny_llama(V, **HEAD16)
    s_mask, t_mask = layout_attention_masks(sdpa, sdpa, bi)
    assert s_mask is bi.attn_mask and t_mask is bi.causal_attn_mask and len(made) == 4


def test_block_sparsity_of_a_causal_mask():
    """128 x 128 tiles: a causal 256 x 256 mask uses 3 of 4 tiles, a 384 one 6 of 9."""
    for L, expect in [(256, 1 / 4), (384, 3 / 9)]:
        mask = flex_mod.create_block_mask(lambda b, h, q, kv: q >= kv, B=2, H=None, Q_LEN=L, KV_LEN=L, device="cpu")
        assert block_sparsity(mask) == pytest.approx(expect)


def test_flex_gets_one_dtype_under_bf16_autocast(tiny_llama, monkeypatch):
    """precision mixed on CPU (float32 weights, bf16 autocast): RoPE leaves q and k float32 while
    v is bf16; flex_attention is not on autocast's list (eager flex would silently run float32,
    compiled flex raises "Mixed query, key, and value dtype"), so mtpsd casts all three to bf16,
    as autocast does for sdpa. The loss stays close to sdpa's under the same autocast."""
    import transformers.integrations.flex_attention as hf_flex

    import mtpsd.flex as mflex

    seen, kernel = [], []
    real_same = mflex.same_dtype

    def recording_same_dtype(q, k, v):
        out = real_same(q, k, v)
        seen.append(((q.dtype, k.dtype, v.dtype), tuple(t.dtype for t in out)))
        return out

    def eager_flex(query, key, value, training=False, **kw):
        kernel.append((query.dtype, key.dtype, value.dtype))
        return flex_mod.flex_attention(query, key, value, **kw)

    monkeypatch.setattr(mflex, "same_dtype", recording_same_dtype)
    monkeypatch.setattr(hf_flex, "compile_friendly_flex_attention", eager_flex)
    losses = {}
    for impl in ("sdpa", "flex_attention"):
        student = tiny_llama(V, seed=1, dtype=torch.float32, attn_implementation=impl, **HEAD16)
        teacher = tiny_llama(V, seed=1, dtype=torch.bfloat16, attn_implementation=impl, **HEAD16)
        lay = _layout(3, attention="causal")
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            losses[impl] = float(mtp_loss_from_layout(student, teacher, lay, teacher_mode="hard",
                                                      mtp_token_id=MTP).loss)
    f32, bf16 = torch.float32, torch.bfloat16
    assert ((f32, f32, bf16), (bf16, bf16, bf16)) in seen  # the student: mixed in, one dtype out
    assert ((bf16, bf16, bf16), (bf16, bf16, bf16)) in seen  # the bf16 teacher: unchanged
    assert kernel and set(kernel) == {(bf16, bf16, bf16)}
    assert losses["flex_attention"] == pytest.approx(losses["sdpa"], rel=2e-2)


@pytest.mark.slow
def test_compiled_flex_forward_on_cpu(tiny_llama):
    """The real HF path (torch.compile'd FlexAttention) on CPU, forward only, with a layout built
    on the device by mtp_loss: it lowers (strided mask tensors once failed here) and gives sdpa's loss."""
    from mtpsd.objective import mtp_loss

    losses = {}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, MTP, (2, 24), generator=g)
    pos = torch.tensor([[2, 9, 15], [4, 11, -1]])
    for impl in ("sdpa", "flex_attention"):
        student = tiny_llama(V, seed=1, dtype=torch.float32, attn_implementation=impl, num_layers=1, **HEAD16)
        with torch.no_grad():
            losses[impl] = float(mtp_loss(student, student, ids, k=4, prediction_positions=pos, mtp_token_id=MTP).loss)
    assert losses["flex_attention"] == pytest.approx(losses["sdpa"], rel=1e-5)
