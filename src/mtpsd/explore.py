"""Helpers for the reviewer notebook ``paper/explore.ipynb`` (no logic lives in its cells).

The notebook reads what the DAG wrote under ``results/`` (docs/architecture.md):

* ``results/summary/results.csv`` and ``train_metrics.csv`` (``mtpsd.plotting.data``
  readers, with their column checks), joined with the paper's numbers shipped in the
  package (``load_paper_results`` + ``mtpsd.reporting.summarize.join_paper``);
* ``results/runs/{run}/decode/{setting}.jsonl`` (``mtpsd decode``): one row per prompt
  with ``tokens``, ``token_strs`` and ``chunk_sizes`` (tokens emitted per forward pass,
  ``sum(chunk_sizes) == len(tokens)``, method.md section 6).

Paths come from :func:`explore_paths`: explicit arguments, else the environment
variables ``MTPSD_RESULTS_DIR`` / ``MTPSD_DECODE_DIR`` / ``MTPSD_RUN`` (the test
suite points them at fixtures), else ``results/`` of the repository that contains the
working directory (Jupyter starts kernels in ``paper/``).

    from mtpsd import explore
    paths = explore.explore_paths()
    s = explore.load_summaries(paths)
    fig = explore.plot_chunk_distributions(explore.load_decodes(paths.decode_dir))
"""

from __future__ import annotations

import html
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mtpsd.errors import MtpsdError
from mtpsd.io import read_jsonl
from mtpsd.plotting.chunks import chunk_texts
from mtpsd.plotting.data import load_paper_results, paper_task, read_results, read_train_metrics
from mtpsd.plotting.style import PALETTE, new_figure
from mtpsd.reporting.summarize import join_paper

ENV_RESULTS, ENV_DECODE, ENV_RUN = "MTPSD_RESULTS_DIR", "MTPSD_DECODE_DIR", "MTPSD_RUN"


@dataclass(frozen=True)
class ExplorePaths:
    """Where the notebook reads: ``results`` root, its ``summary`` folder, one run's decodes."""

    results: Path
    summary: Path
    run: str | None
    decode_dir: Path | None


def repo_results_dir(start: str | Path | None = None) -> Path:
    """``results/`` of the first of ``start`` (default cwd) and its parents holding a
    ``Snakefile`` (or a ``Snakefile``) or a ``results/summary`` folder; ``start/results``
    if none does."""
    start = Path(start or Path.cwd()).resolve()
    for d in (start, *start.parents):
        if any((d / f).is_file() for f in ("Snakefile", "Snakefile")) or (d / "results" / "summary").is_dir():
            return d / "results"
    return start / "results"


def list_runs(results: str | Path) -> list[str]:
    """Run names with a decode folder: ``results/runs/{run}/decode/`` (sorted)."""
    runs = Path(results) / "runs"
    if not runs.is_dir():
        return []
    return sorted(d.name for d in runs.iterdir() if (d / "decode").is_dir())


def explore_paths(results: str | Path | None = None, decode_dir: str | Path | None = None,
                  run: str | None = None, env: dict | None = None) -> ExplorePaths:
    """Resolve the notebook's paths: argument > environment variable > repository default.

    ``decode_dir`` defaults to ``results/runs/{run}/decode`` with ``run`` = the given or
    ``MTPSD_RUN`` run, else the first run that has decodes (None if there is none).
    """
    env = os.environ if env is None else env
    root = Path(results or env.get(ENV_RESULTS) or repo_results_dir())
    summary = root / "summary"
    if not summary.is_dir():
        raise MtpsdError(f"{summary}: no summary folder (run the pipeline first, e.g. "
                         f"`snakemake --cores 2 results/summary/results.csv`, or set {ENV_RESULTS})")
    run = run or env.get(ENV_RUN) or None
    ddir = decode_dir or env.get(ENV_DECODE)
    if ddir:
        ddir = Path(ddir)
        run = run or ddir.parent.name
    else:
        runs = list_runs(root)
        if run is None and runs:
            run = runs[0]
        ddir = root / "runs" / run / "decode" if run in runs else None
    return ExplorePaths(results=root, summary=summary, run=run, decode_dir=ddir)


def join_with_paper(results: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our rows beside the paper's rows for the same task, strategy, param and metric.

    Our task names are mapped to the paper's (``paper_task``: ``mtpsd_gsm8k_cot`` ->
    ``gsm8k``) for the match only, then ``mtpsd.reporting.summarize.join_paper`` does the join
    (one output row per matching paper model; ``paper_*`` columns NaN where none).
    """
    ours = results.assign(_task=results["task"])
    ours["task"] = [paper_task(t) or t for t in ours["task"]]
    out = join_paper(ours, paper)
    return out.assign(task=out["_task"]).drop(columns="_task")


@dataclass
class Summaries:
    """The DataFrames the notebook shows: ours, training metrics, paper, and the join."""

    results: pd.DataFrame
    train_metrics: pd.DataFrame | None
    paper: pd.DataFrame
    joined: pd.DataFrame


def load_summaries(paths: ExplorePaths) -> Summaries:
    """Read ``results.csv`` (required) and ``train_metrics.csv`` (None if absent) with the
    library readers, the packaged paper table, and their join (:func:`join_with_paper`)."""
    results = read_results(paths.summary / "results.csv")
    tm_path = paths.summary / "train_metrics.csv"
    train = read_train_metrics(tm_path) if tm_path.is_file() else None
    paper = load_paper_results()
    return Summaries(results, train, paper, join_with_paper(results, paper))


def load_decodes(decode_dir: str | Path | None) -> dict[str, list[dict]]:
    """``{setting: rows}`` of every ``{setting}.jsonl`` in ``decode_dir`` (summaries skipped);
    each row must have ``tokens`` and ``chunk_sizes`` with ``sum(chunk_sizes) == len(tokens)``."""
    if decode_dir is None:
        raise MtpsdError(f"no decode folder: no results/runs/{{run}}/decode/ found; set {ENV_DECODE} "
                         "or run `mtpsd decode` (rule decode) first")
    decode_dir = Path(decode_dir)
    files = sorted(decode_dir.glob("*.jsonl"))
    if not files:
        raise MtpsdError(f"{decode_dir}: no decode files (*.jsonl; written by `mtpsd decode`)")
    out = {}
    for path in files:
        rows = read_jsonl(path, required=("tokens", "chunk_sizes"))
        for i, r in enumerate(rows):
            if sum(r["chunk_sizes"]) != len(r["tokens"]):
                raise MtpsdError(f"{path}: row {i + 1}: sum(chunk_sizes)={sum(r['chunk_sizes'])} "
                                 f"!= len(tokens)={len(r['tokens'])}")
        out[path.stem] = rows
    return out


def chunk_size_frame(decodes: dict[str, list[dict]]) -> pd.DataFrame:
    """Long format, one row per forward pass: ``setting``, ``generation`` (row index),
    ``chunk_size``; plus per generation ``eff_k`` = tokens / passes (method.md s. 6)."""
    recs = []
    for setting, rows in decodes.items():
        for g, r in enumerate(rows):
            sizes = r["chunk_sizes"]
            eff = len(r["tokens"]) / max(len(sizes), 1)
            recs += [{"setting": setting, "generation": g, "chunk_size": int(n), "eff_k": eff} for n in sizes]
    return pd.DataFrame(recs, columns=["setting", "generation", "chunk_size", "eff_k"])


def chunk_size_counts(decodes: dict[str, list[dict]]) -> pd.DataFrame:
    """Generations x chunk sizes: number of forward passes that emitted n tokens, per
    (setting, generation) row, with ``tokens``, ``passes`` and ``eff_k`` columns."""
    df = chunk_size_frame(decodes)
    counts = pd.crosstab([df["setting"], df["generation"]], df["chunk_size"])
    counts.columns = [f"n={c}" for c in counts.columns]
    g = df.groupby(["setting", "generation"])
    counts["tokens"] = g["chunk_size"].sum()
    counts["passes"] = g["chunk_size"].size()
    counts["eff_k"] = counts["tokens"] / counts["passes"]
    return counts


def plot_chunk_distributions(decodes: dict[str, list[dict]]) -> Figure:
    """Left: share of forward passes per chunk size, one bar group per setting (pooled
    over generations). Right: histogram of per-generation effective k per setting."""
    df = chunk_size_frame(decodes)
    if df.empty:
        raise MtpsdError("decode files hold no generations")
    settings = list(decodes)
    fig, axes = new_figure(2, width=4.4, height=3.3)
    ax, ax2 = axes[0]
    kmax = int(df["chunk_size"].max())
    width = 0.8 / len(settings)
    for i, s in enumerate(settings):
        sub = df[df["setting"] == s]
        share = sub["chunk_size"].value_counts(normalize=True).reindex(range(1, kmax + 1), fill_value=0)
        ax.bar(np.arange(1, kmax + 1) + (i - (len(settings) - 1) / 2) * width, share.to_numpy(), width,
               color=PALETTE[i % len(PALETTE)], label=f"{s} ({len(sub)} passes)")
        per_gen = sub.drop_duplicates("generation")["eff_k"]
        ax2.hist(per_gen, bins=np.arange(0.75, kmax + 0.76, 0.25), alpha=0.6,
                 color=PALETTE[i % len(PALETTE)], label=f"{s} ({len(per_gen)} generations)")
    ax.set_xticks(range(1, kmax + 1))
    ax.set_xlabel("Chunk size (tokens emitted by one forward pass)")
    ax.set_ylabel("Share of forward passes")
    ax.set_title("Chunk sizes, pooled")
    ax.legend()
    ax2.set_xlabel("Effective k of one generation (tokens / passes)")
    ax2.set_ylabel("Generations")
    ax2.set_title("Per-generation effective k")
    ax2.legend()
    fig.tight_layout()
    return fig


def _row_at(rows: list[dict], index: int, name: str) -> dict:
    if not 0 <= index < len(rows):
        raise MtpsdError(f"{name}: prompt index {index} out of range (file has {len(rows)} rows)")
    return rows[index]


def _chunk_html(row: dict) -> str:
    """Chunks as alternating-shade spans; a chunk of n > 1 tokens gets a superscript n."""
    parts = []
    for j, (text, n) in enumerate(zip(chunk_texts(row), row["chunk_sizes"])):
        shade = ("#e8e8e8", "#d4e6f6")[j % 2] if n == 1 else ("#fdd49e", "#fc8d59")[j % 2]
        sup = f"<sup style='font-size:60%'>{n}</sup>" if n > 1 else ""
        body = html.escape(text).replace("\n", "↵<br>")
        parts.append(f"<span style='background:{shade};border-right:1px solid #555'>{body}</span>{sup}")
    return "".join(parts)


class SideBySide:
    """Two generations of one prompt; ``frame`` holds the numbers, ``_repr_html_`` the view."""

    def __init__(self, frame: pd.DataFrame, html_text: str):
        self.frame = frame
        self.html = html_text

    def _repr_html_(self) -> str:
        return self.html


def side_by_side(left: list[dict], right: list[dict], index: int, *,
                 labels: tuple[str, str] = ("static-k1", "confadapt-tau0.9")) -> SideBySide:
    """Prompt ``index`` of two decode files, chunk boundaries marked (``|`` in the frame,
    shaded spans in HTML). Rows must belong to the same prompt (same ``id`` / ``prompt``).

    ``frame`` rows: chunked text, tokens, forward passes, effective k, and the first token
    position where the two generations differ (``-`` if identical).
    """
    a, b = _row_at(left, index, labels[0]), _row_at(right, index, labels[1])
    for key in ("id", "prompt"):
        if key in a and key in b and a[key] != b[key]:
            raise MtpsdError(f"prompt index {index}: {key} differs between {labels[0]} ({a[key]!r}) "
                             f"and {labels[1]} ({b[key]!r})")
    ta, tb = a["tokens"], b["tokens"]
    diff = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y),
                None if len(ta) == len(tb) else min(len(ta), len(tb)))
    cols = {}
    for label, r in zip(labels, (a, b)):
        cols[label] = {"text (| = chunk boundary)": "|".join(chunk_texts(r)), "tokens": len(r["tokens"]),
                       "forward passes": len(r["chunk_sizes"]),
                       "effective k": round(len(r["tokens"]) / max(len(r["chunk_sizes"]), 1), 3),
                       "first differing token": "-" if diff is None else diff}
    frame = pd.DataFrame(cols)
    prompt = html.escape(str(a.get("prompt", a.get("question", "")))).replace("\n", "<br>")
    stats = "".join(f"<td style='text-align:left'>{frame.loc['tokens', s]} tokens, "
                    f"{frame.loc['forward passes', s]} passes, effective k {frame.loc['effective k', s]}</td>"
                    for s in labels)
    note = ("identical token sequences" if diff is None else f"token sequences differ from position {diff}")
    view = (f"<p><b>Prompt {index}</b> (id {html.escape(str(a.get('id', index)))}; {note})<br>"
            f"<code>{prompt}</code></p><table><tr>"
            + "".join(f"<th>{html.escape(s)}</th>" for s in labels) + "</tr><tr>"
            + "".join(f"<td style='vertical-align:top;text-align:left;font-family:monospace;max-width:40em'>"
                      f"{_chunk_html(r)}</td>" for r in (a, b))
            + f"</tr><tr>{stats}</tr></table>")
    return SideBySide(frame, view)


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of ``fig`` (the figure is closed): figures are built on the Agg backend
    (``mtpsd.plotting.style``), so the notebook displays them as images."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

