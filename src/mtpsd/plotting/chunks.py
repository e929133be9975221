"""Figure 1: one generated answer coloured by decoding chunk, each labelled with its size.

Input: one row of ``results/runs/{run}/decode/{setting}.jsonl`` (mtpsd decode) with
``token_strs`` (the decoded string of each generated token, one per id in ``tokens``)
and ``chunk_sizes`` (tokens emitted per forward pass; sum == len(tokens), method.md
section 6). Chunks are laid out as wrapped text; the background colour encodes the
chunk size (1 = one token per pass, grey) and the small number above a chunk is its size.
"""

from __future__ import annotations

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from mtpsd.errors import MtpsdError
from mtpsd.plotting.style import new_figure

_CHAR_W = 0.0105  # axes-fraction width of one monospace character at font size 9 (width 7.5 in)
_LINE_H = 0.1


def chunk_texts(row: dict) -> list[str]:
    """The text of each chunk: ``token_strs`` grouped by ``chunk_sizes``."""
    for key in ("token_strs", "chunk_sizes"):
        if key not in row:
            raise MtpsdError(f"decode row has no {key!r} field (needed to draw chunks; "
                             "mtpsd decode writes token_strs beside tokens)")
    strs, sizes = row["token_strs"], row["chunk_sizes"]
    if sum(sizes) != len(strs):
        raise MtpsdError(f"decode row: sum(chunk_sizes)={sum(sizes)} != len(token_strs)={len(strs)}")
    out, i = [], 0
    for n in sizes:
        out.append("".join(strs[i:i + n]))
        i += n
    return out


def pick_row(rows: list[dict], index: int | None = None) -> dict:
    """Row ``index``, or (None) the row with the most multi-token chunks among short answers."""
    if not rows:
        raise MtpsdError("decode file has no rows")
    if index is not None:
        if not 0 <= index < len(rows):
            raise MtpsdError(f"--row {index}: file has {len(rows)} rows")
        return rows[index]
    short = [r for r in rows if len(r.get("token_strs", [])) <= 120] or rows
    return max(short, key=lambda r: sum(1 for n in r.get("chunk_sizes", []) if n > 1))


def _visible(s: str) -> str:
    return s.replace("\n", "↵").replace("\t", "→")


def plot_chunks(row: dict, *, title: str | None = None, width_chars: int = 80) -> Figure:
    """Wrap the answer's chunks into lines of ``width_chars`` and colour each chunk."""
    chunks = [_visible(c) for c in chunk_texts(row)]
    sizes = row["chunk_sizes"]
    # line-break only between chunks (a chunk longer than a line gets a line of its own)
    lines, cur, used = [], [], 0
    for text, n in zip(chunks, sizes):
        if cur and used + len(text) > width_chars:
            lines.append(cur)
            cur, used = [], 0
        cur.append((text, n))
        used += len(text)
    if cur:
        lines.append(cur)
    kmax = max(max(sizes), 2)
    cmap = mpl.colormaps["YlOrRd"]
    n_lines = len(lines)
    fig, axes = new_figure(1, width=7.5, height=0.42 * n_lines + 1.0)
    ax = axes[0, 0]
    ax.set_axis_off()
    line_h = 1.0 / (n_lines + 0.6)
    char_w = 1.0 / (width_chars + 4)
    for li, line in enumerate(lines):
        y = 1.0 - (li + 0.9) * line_h
        x = 0.0
        for text, n in line:
            w = max(len(text), 1) * char_w
            color = "0.88" if n == 1 else cmap(0.15 + 0.7 * (n - 1) / (kmax - 1))
            ax.add_patch(FancyBboxPatch((x + 0.001, y - 0.32 * line_h), w - 0.002, 0.62 * line_h,
                                        boxstyle="round,pad=0,rounding_size=0.004", fc=color, ec="white",
                                        lw=0.5, transform=ax.transAxes))
            ax.text(x + w / 2, y, text, ha="center", va="center", family="monospace", fontsize=7.2,
                    transform=ax.transAxes)
            ax.text(x + w / 2, y + 0.42 * line_h, str(n), ha="center", va="center", fontsize=5.5,
                    color="0.3", transform=ax.transAxes)
            x += w
    n_tok, n_pass = sum(sizes), len(sizes)
    head = title or "Generated answer coloured by decoding chunk (number above = tokens in the chunk)"
    ax.set_title(f"{head}\n{n_tok} tokens in {n_pass} forward passes: {n_tok / n_pass:.2f} tokens/pass",
                 fontsize=8.5)
    norm = mpl.colors.Normalize(vmin=1, vmax=kmax)
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, orientation="horizontal", fraction=0.05, pad=0.02, aspect=50)
    cb.set_label("chunk size (tokens per forward pass)", fontsize=7)
    cb.ax.tick_params(labelsize=6)
    return fig
