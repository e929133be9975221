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

PyTorch 2.13 has FlexAttention forward on CPU but no backward there (design.md), so
training falls back to sdpa on CPU (:func:`resolve_attn_implementation`).
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


def resolve_attn_implementation(requested: str, device: torch.device | str) -> str:
    """The attention implementation to load models with on ``device``.

    ``"flex_attention"`` needs a CUDA device (no backward on CPU): elsewhere a warning
    is issued and ``"sdpa"`` is returned, so the tiny CPU run works with any config.
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
    return requested


def attn_implementation_of(model) -> str:
    """``config._attn_implementation`` of a (possibly DDP-wrapped) HF model; ``"sdpa"`` if unknown."""
    inner = model
    while not hasattr(inner, "config") and hasattr(inner, "module"):
        inner = inner.module  # DDP / accelerate wrappers
    cfg = getattr(inner, "config", None)
    return getattr(cfg, "_attn_implementation", None) or "sdpa"


def mask_ids(layout: PackedLayout) -> dict[str, torch.Tensor]:
    """Per-position ids the mask is a function of; every tensor is (B, L)."""
    valid, is_mtp = layout.valid, layout.is_mtp
    j = layout.offset.clamp(min=0)  # (B, L) 1..k-1 on masks (0 on x_{p_r} / elsewhere)
    return {
        "valid": valid,
        "is_mtp": is_mtp,
        "is_gt": valid & ~is_mtp,
        "orig": layout.orig_index,
        "pref": torch.where(is_mtp, layout.position_ids - j, layout.orig_index),
        "region": layout.region,
        "j": j,
    }


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
    return bool(torch.equal(layout.attn_mask, layout.causal_attn_mask))


def block_mask(layout: PackedLayout, *, causal: bool):
    """``BlockMask`` of shape (B, 1, L, L) for ``layout`` on the layout's device."""
    from torch.nn.attention.flex_attention import create_block_mask

    B, L = layout.input_ids.shape
    return create_block_mask(layout_mask_mod(layout, causal=causal), B=B, H=None, Q_LEN=L, KV_LEN=L,
                             device=layout.input_ids.device)


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
        return block_mask(layout, causal=teacher or student_is_causal(layout))
    raise MtpsdError(f"model uses attn_implementation={impl!r}: the packed MTP layout needs "
                     f"'sdpa' or 'flex_attention'")
