"""Draw one figure from summary files; writes the .png and the .pdf beside it.

Example::

    mtpsd plot pareto --in results/summary/results.csv --out figures/fig05_pareto.png
    mtpsd plot chunks --in results/runs/tiny/decode/confadapt-tau0.9.jsonl --out figures/fig01_chunks.png
    mtpsd plot layout --out figures/fig02_layout.png          # no input: drawn from mtpsd.layout
"""

from __future__ import annotations

from mtpsd.plotting import FIGURES
from mtpsd.plotting.figures import make_figure
from mtpsd.plotting.style import save_figure


def add_arguments(p) -> None:
    p.add_argument("figure", choices=[*FIGURES, "ablations"],
                   help="which figure (ablations: figure 11, only for configs with ablation runs)")
    p.add_argument("--in", dest="inp", help="input: results.csv, train_metrics.csv, decode JSONL or "
                   "confidence_quality CSV (not needed for layout, mask-offsets, mask-k)")
    p.add_argument("--out", required=True, help="output .png (the .pdf is written beside it)")
    p.add_argument("--task", help="task to plot (default: the GSM8K-like task, else the first accuracy task)")
    p.add_argument("--row", type=int, help="chunks: row index of the decode file (default: most multi-token chunks)")
    p.add_argument("--checkpoint", default="final", help="wallclock: checkpoint name (default: final)")
    p.add_argument("--no-paper", action="store_true", help="pareto, ablations: leave out the paper's panel")


def run(args) -> int:
    fig = make_figure(args.figure, args.inp, task=args.task, row=args.row, checkpoint=args.checkpoint,
                      paper=not args.no_paper)
    paths = save_figure(fig, args.out)
    print(f"{args.figure} -> {', '.join(map(str, paths))}")
    return 0
