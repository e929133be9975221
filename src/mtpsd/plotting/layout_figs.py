"""Figures 2-4: the packed training layout and its blocked attention mask.

Drawn from the real layout code (``mtpsd.layout.build_layout``, method.md section 3)
on a hand-made word-level text, so no tokenizer or checkpoint is needed. Figure 2
shows, for every packed position, the input token (ground truth or ``<MTP>``), its
position id (``x_t`` keeps ``t``; mask ``j`` of region ``r`` gets ``p_r + j``), the
region, the read-out target ``x_{p_r+j}`` and whether the position is supervised.
Figures 3 and 4 show ``attn_mask[b, 0]`` (query rows x key columns, True = attend)
for two sets of prediction positions ("rolling" offsets) and for two values of k.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from mtpsd.layout import PackedLayout, build_layout
from mtpsd.plotting.style import STRATEGY_COLORS, new_figure

# A short GSM8K-like training text, one word per token; the last word is EOS.
EXAMPLE_WORDS = ["Tom", "has", "3", "pens", ",", "buys", "5", ".", "3", "+", "5", "=", "8", "<eos>"]
MTP = "<MTP>"
_MTP_COLOR = "#F5B971"
_READOUT_COLOR = "#9CC3E4"


def example_layout(prediction_positions: list[int], k: int, *, attention: str = "causal",
                   words: list[str] = EXAMPLE_WORDS) -> tuple[PackedLayout, list[str]]:
    """``build_layout`` on ``words`` (ids = word index, ``<MTP>`` = len(words), EOS last).

    Returns the layout (batch of one) and the vocabulary list (id -> word).
    """
    vocab = list(words) + [MTP]
    ids = torch.arange(len(words)).unsqueeze(0)  # (1, N)
    pos = torch.tensor([prediction_positions], dtype=torch.long)  # (1, M)
    lay = build_layout(ids, pos, k=k, mtp_token_id=len(words), attention=attention,
                       eos_token_id=len(words) - 1)
    return lay, vocab


def plot_layout(prediction_positions: tuple[int, ...] = (2, 7), k: int = 3) -> Figure:
    """Figure 2: one text packed with ``k-1`` masks after each prediction position."""
    lay, vocab = example_layout(list(prediction_positions), k)
    L = lay.input_ids.shape[1]
    valid = lay.valid[0].tolist()
    rows = {
        "input token": [vocab[t] for t in lay.input_ids[0].tolist()],
        "position id": [str(p) for p in lay.position_ids[0].tolist()],
        "region r": [str(r) if r >= 0 else "" for r in lay.region[0].tolist()],
        "offset j": [str(o + 1) if o >= 0 else "" for o in lay.offset[0].tolist()],
        "target": [vocab[t] if t >= 0 else "" for t in lay.targets_gt[0].tolist()],
        "supervised": ["✓" if r and v else "" for r, v in zip(lay.readout[0].tolist(), valid)],
    }
    fig, axes = new_figure(1, width=0.62 * L + 1.4, height=2.6)
    ax = axes[0, 0]
    ax.set_xlim(-0.5, L - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.9)
    is_mtp, readout = lay.is_mtp[0].tolist(), lay.readout[0].tolist()
    for c in range(L):
        color = _MTP_COLOR if is_mtp[c] else (_READOUT_COLOR if readout[c] else "white")
        ax.add_patch(_rect(c, -0.5, len(rows), color))
        for r, (name, vals) in enumerate(rows.items()):
            weight = "bold" if name in ("input token", "target") else "normal"
            ax.text(c, r, vals[c], ha="center", va="center", fontsize=7.5, fontweight=weight)
        ax.text(c, -0.75, str(c), ha="center", va="center", fontsize=6, color="0.45")
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_xticks([])
    ax.tick_params(axis="y", length=0)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for r in range(len(rows) + 1):
        ax.axhline(r - 0.5, color="0.85", lw=0.6)
    ax.set_title(f"Training layout: k={k}, prediction positions p={list(prediction_positions)} "
                 f"(blue: x_p read-out, orange: <MTP>; grey numbers: packed index)", fontsize=8.5)
    fig.tight_layout()
    return fig


def _rect(c: int, y0: float, h: float, color: str):
    from matplotlib.patches import Rectangle

    return Rectangle((c - 0.5, y0), 1, h, facecolor=color, edgecolor="0.8", lw=0.5, zorder=0)


def _draw_mask(ax, lay: PackedLayout, vocab: list[str], title: str) -> None:
    """``attn_mask[0, 0]`` as an image: dark = attend; <MTP> rows/columns tinted."""
    mask = lay.attn_mask[0, 0].numpy().astype(float)  # (L, L) query x key
    valid = lay.valid[0].numpy()
    is_mtp = lay.is_mtp[0].numpy()
    img = np.where(mask > 0, 2.0, np.where(is_mtp[:, None] | is_mtp[None, :], 1.0, 0.0))
    img[~valid, :] = np.nan
    cmap = ListedColormap(["white", "#FBE3C4", STRATEGY_COLORS["static"]])
    ax.imshow(img, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
    labels = [vocab[t] if v else "" for t, v in zip(lay.input_ids[0].tolist(), valid)]
    labels = ["M" if lab == MTP else lab for lab in labels]
    L = len(labels)
    ax.set_xticks(range(L), labels, rotation=90, fontsize=6.5)
    ax.set_yticks(range(L), [f"{lab} ({p})" for lab, p in zip(labels, lay.position_ids[0].tolist())],
                  fontsize=6.5)
    ax.set_xticks(np.arange(-0.5, L, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, L, 1), minor=True)
    ax.grid(which="minor", color="0.85", lw=0.4)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (position id)")
    ax.set_title(title, fontsize=9)


def _two_masks(panels: list[tuple[list[int], int]], suptitle: str) -> Figure:
    """Two blocked masks side by side, one per ``(prediction positions, k)``."""
    fig, axes = new_figure(2, width=4.0, height=4.3)
    for ax, (pos, k) in zip(axes[0], panels):
        lay, vocab = example_layout(pos, k)
        _draw_mask(ax, lay, vocab, f"k={k}, prediction positions p={pos}")
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def plot_mask_offsets(positions_a: tuple[int, ...] = (1, 6), positions_b: tuple[int, ...] = (3, 8),
                      k: int = 3) -> Figure:
    """Figure 3: the blocked mask for two sets of prediction positions (rolling offsets)."""
    return _two_masks([(list(positions_a), k), (list(positions_b), k)],
                      "Blocked attention mask (blue = attend; M = <MTP>, tinted rows/cols)")


def plot_mask_k(positions: tuple[int, ...] = (2, 7), k_a: int = 2, k_b: int = 4) -> Figure:
    """Figure 4: the blocked mask at the same prediction positions for two values of k."""
    return _two_masks([(list(positions), k_a), (list(positions), k_b)],
                      "Blocked attention mask for two values of k (blue = attend; M = <MTP>)")
