"""FlexAttention for the packed MTP layout (method.md section 3), a GPU option.

The blocked mask of :func:`mtpsd.layout.build_layout` is a function of a few per-position
ids, so FlexAttention can evaluate it block-sparsely instead of reading a dense
``(B, 1, L, L)`` tensor. With, per packed position ``i`` of row ``b``,

- ``valid_i`` (not padding), ``m_i`` (is ``<MTP>``), ``g_i = valid_i and not m_i``,
- ``t_i`` the source index of a ground-truth token (``orig_index``),
- ``j_i`` the offset inside the region (``offset``; 1..k-1 for masks),
- ``e_i`` the prefix end: ``t_i`` for ground truth, ``position_ids_i - j_i`` for a mask
  (the index of its region's ``x_{p_r}``),
- ``r_i`` the region index,

query ``q`` may attend to key ``c`` iff

    (valid_q and g_c and t_c <= e_q)                                  # ground-truth keys
    or (m_q and m_c and r_q == r_c and (bidirectional or j_c <= j_q))  # masks of its region
    or (not valid_q and q == c)                                        # padding: itself

which is exactly ``layout.attn_mask`` (student) / ``layout.causal_attn_mask`` (teacher);
``tests/test_flex.py`` checks the equality on random layouts.

Running it on CUDA (each point has a test in ``tests/test_flex.py``):

- the tensors the mask function reads are contiguous (compiled FlexAttention cannot lower a
  mask function that reads strided views: ``mtpsd.layout`` builds contiguous ones, and
  :func:`mask_ids` makes sure);
- the compiled CUDA kernel needs ``head_dim >= 16``: :func:`resolve_attn_implementation` refuses
  smaller heads before any weight is loaded;
- under bf16 autocast (``train.precision: mixed``) RoPE leaves q and k in float32 (its cos/sin
  follow the float32 residual stream) while v comes out of its projection in bf16; sdpa is on
  autocast's list and casts all three, FlexAttention is not, so :func:`install_dtype_cast` makes
  HF's flex_attention cast q, k and v to the autocast dtype the same way (outside autocast, to
  v's dtype when they differ);
- one ``BlockMask`` per layout and mask kind: student and teacher share it whenever the student's
  mask is the causal one (:func:`layout_attention_masks`).

PyTorch 2.13 has FlexAttention forward on CPU but no backward there (it raises "FlexAttention
does not support backward on CPU"), so training falls back to sdpa on CPU
(:func:`resolve_attn_implementation`).

When it pays over sdpa at the paper's lengths: config/README.md (block sparsity measured by
``benchmarks/flex_sparsity.py`` with :func:`block_sparsity`).
"""

from __future__ import annotations

import warnings

import torch

from mtpsd.errors import MtpsdError
from mtpsd.layout import PackedLayout

ATTN_IMPLEMENTATIONS = ("sdpa", "flex_attention")


def flex_available() -> bool:
    """True when ``torch.nn.attention.flex_attention`` can be imported."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


FLEX_MIN_HEAD_DIM = 16  # the compiled CUDA kernel's smallest head (the CPU kernel has no limit)


def head_dim_of(model_config) -> int:
    """Per-head width of a transformers config: ``head_dim``, else hidden / heads."""
    return getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads


def resolve_attn_implementation(requested: str, device: torch.device | str, model_config=None) -> str:
    """The attention implementation to load models with on ``device``.

    ``"flex_attention"`` needs a CUDA device (no backward on CPU): elsewhere a warning
    is issued and ``"sdpa"`` is returned, so the tiny CPU run works with any config. On CUDA
    ``model_config`` (the checkpoint's transformers config, read before any weight) must have
    ``head_dim >= 16``, the compiled kernel's minimum; smaller heads are refused here.
    """
    if requested not in ATTN_IMPLEMENTATIONS:
        raise MtpsdError(f"train.attn_implementation={requested!r}: choose one of "
                         f"{', '.join(ATTN_IMPLEMENTATIONS)}")
    if requested == "flex_attention":
        dev = torch.device(device)
        if dev.type != "cuda":
            warnings.warn(f"train.attn_implementation=flex_attention needs a CUDA device "
                          f"(FlexAttention has no backward on {dev.type}); using sdpa", stacklevel=2)
            return "sdpa"
        if not flex_available():
            warnings.warn("torch.nn.attention.flex_attention is not available; using sdpa", stacklevel=2)
            return "sdpa"
        if model_config is not None and head_dim_of(model_config) < FLEX_MIN_HEAD_DIM:
            raise MtpsdError(f"train.attn_implementation=flex_attention: the model's head_dim is "
                             f"{head_dim_of(model_config)}, and FlexAttention's compiled CUDA kernel needs "
                             f"head_dim >= {FLEX_MIN_HEAD_DIM}; use train.attn_implementation: sdpa")
    return requested


def attn_implementation_of(model) -> str:
    """``config._attn_implementation`` of a (possibly DDP-wrapped) HF model; ``"sdpa"`` if unknown."""
    inner = model
    while not hasattr(inner, "config") and hasattr(inner, "module"):
        inner = inner.module  # DDP / accelerate wrappers
    cfg = getattr(inner, "config", None)
    return getattr(cfg, "_attn_implementation", None) or "sdpa"


def mask_ids(layout: PackedLayout) -> dict[str, torch.Tensor]:
    """Per-position ids the mask is a function of; every tensor is (B, L) and contiguous
    (compiled FlexAttention fails to lower a mask function that reads strided views)."""
    valid, is_mtp = layout.valid, layout.is_mtp
    j = layout.offset.clamp(min=0)  # (B, L) 1..k-1 on masks (0 on x_{p_r} / elsewhere)
    ids = {
        "valid": valid,
        "is_mtp": is_mtp,
        "is_gt": valid & ~is_mtp,
        "orig": layout.orig_index,
        "pref": torch.where(is_mtp, layout.position_ids - j, layout.orig_index),
        "region": layout.region,
        "j": j,
    }
    return {k: v.contiguous() for k, v in ids.items()}


def layout_mask_mod(layout: PackedLayout, *, causal: bool):
    """A FlexAttention ``mask_mod(b, h, q, kv) -> bool`` equal to the layout's dense mask.

    ``causal=True`` gives ``layout.causal_attn_mask`` (teacher); ``causal=False`` gives the
    bidirectional-in-region variant. Use :func:`student_is_causal` for the student.
    """
    ids = mask_ids(layout)
    valid, is_mtp, is_gt = ids["valid"], ids["is_mtp"], ids["is_gt"]
    orig, pref, region, j = ids["orig"], ids["pref"], ids["region"], ids["j"]

    def mask_mod(b, h, q, kv):
        gt_key = valid[b, q] & is_gt[b, kv] & (orig[b, kv] <= pref[b, q])
        same = is_mtp[b, q] & is_mtp[b, kv] & (region[b, q] == region[b, kv])
        if causal:
            same = same & (j[b, kv] <= j[b, q])
        pad_self = ~valid[b, q] & (q == kv)
        return gt_key | same | pad_self

    return mask_mod


def student_is_causal(layout: PackedLayout) -> bool:
    """Whether the student mask is the causal one (``attention="causal"`` or no region with k > 2)."""
    return layout.student_is_causal


def block_mask(layout: PackedLayout, *, causal: bool):
    """``BlockMask`` of shape (B, 1, L, L) for ``layout`` on the layout's device."""
    from torch.nn.attention.flex_attention import create_block_mask

    B, L = layout.input_ids.shape
    return create_block_mask(layout_mask_mod(layout, causal=causal), B=B, H=None, Q_LEN=L, KV_LEN=L,
                             device=layout.input_ids.device)


def block_sparsity(mask) -> float:
    """Fraction of the (query block, key block) tiles a ``BlockMask`` skips entirely, over its
    batch (FlexAttention computes only the others; sdpa computes every tile)."""
    B, _, q_blocks, kv_blocks = mask.kv_indices.shape[:4]
    used = mask.kv_num_blocks.sum() + (mask.full_kv_num_blocks.sum() if mask.full_kv_num_blocks is not None else 0)
    return 1.0 - float(used) / (B * q_blocks * kv_blocks)


def attention_mask_for(model, layout: PackedLayout, *, teacher: bool):
    """The ``attention_mask`` to pass to ``model`` for ``layout``.

    ``teacher=True``: the causal mask (the teacher is an ordinary causal LM);
    ``teacher=False``: the student mask ``layout.attn_mask``.

    sdpa: the dense 4D bool mask (True = attend). flex_attention: a ``BlockMask`` (HF
    passes 4D masks through unchanged, ``masking_utils._preprocess_mask_arguments``).
    Any other implementation is refused: "eager" silently mis-reads a bool mask
    (design.md) and flex would *add* a bool tensor to the scores.
    """
    impl = attn_implementation_of(model)
    if impl == "sdpa":
        return layout.causal_attn_mask if teacher else layout.attn_mask
    if impl == "flex_attention":
        install_dtype_cast()
        return block_mask(layout, causal=teacher or layout.student_is_causal)
    raise MtpsdError(f"model uses attn_implementation={impl!r}: the packed MTP layout needs "
                     f"'sdpa' or 'flex_attention'")


def layout_attention_masks(student, teacher, layout: PackedLayout) -> tuple:
    """``(student mask, teacher mask)`` for one layout, each built once: when both models use
    flex_attention and the student's mask is the causal one, they share one ``BlockMask``
    (building it evaluates the mask function over the whole ``(B, L, L)`` grid). ``teacher``
    may be None (``teacher_mode="gt"``): its mask is then None."""
    s_mask = attention_mask_for(student, layout, teacher=False)
    if teacher is None:
        return s_mask, None
    if (layout.student_is_causal and attn_implementation_of(student) == "flex_attention"
            and attn_implementation_of(teacher) == "flex_attention"):
        return s_mask, s_mask
    return s_mask, attention_mask_for(teacher, layout, teacher=True)


def same_dtype(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
    """q, k, v in one dtype, as autocast gives sdpa: under autocast the autocast dtype, else
    (they differ) value's dtype; unchanged when they agree and autocast is off."""
    dev = query.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
    elif query.dtype == key.dtype == value.dtype:
        return query, key, value
    else:
        dt = value.dtype
    return query.to(dt), key.to(dt), value.to(dt)


def install_dtype_cast() -> None:
    """Make transformers' ``flex_attention`` attention function cast q, k, v to one dtype
    (:func:`same_dtype`) before FlexAttention; idempotent. It replaces the process-wide entry of
    ``transformers.AttentionInterface`` by a wrapper around the original, which changes nothing
    where q, k, v already agree outside autocast (every bf16 or float32 model)."""
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    current = ALL_ATTENTION_FUNCTIONS["flex_attention"]
    if getattr(current, "_mtpsd_same_dtype", False):
        return

    def flex_attention_same_dtype(module, query, key, value, attention_mask, **kwargs):
        query, key, value = same_dtype(query, key, value)
        return current(module, query, key, value, attention_mask, **kwargs)

    flex_attention_same_dtype._mtpsd_same_dtype = True
    AttentionInterface.register("flex_attention", flex_attention_same_dtype)
