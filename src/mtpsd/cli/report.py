"""Tables and the paper report from the summary CSVs.

Example::

    mtpsd report tables --results results/summary/results.csv --out-dir paper/generated
    mtpsd report build --summary-dir results/summary --figures-dir figures \\
        --generated-dir paper/generated --out paper/report.md
"""

from __future__ import annotations


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    t = sub.add_parser("tables", help="table01_strategies and table02_paper_vs_ours (.md, .tex)")
    t.add_argument("--results", required=True, help="results/summary/results.csv")
    t.add_argument("--out-dir", required=True, help="folder for the tables (paper/generated)")
    b = sub.add_parser("build", help="paper/report.md, numbers.json and numbers.tex")
    b.add_argument("--summary-dir", required=True, help="results/summary")
    b.add_argument("--figures-dir", required=True, help="figures/")
    b.add_argument("--generated-dir", required=True, help="paper/generated (tables in, numbers out)")
    b.add_argument("--out", required=True, help="report Markdown to write")
    b.add_argument("--task", help="headline task (default: the GSM8K-like task)")
    b.add_argument("--tau", type=float, default=0.9, help="ConfAdapt threshold of the claims (paper: 0.9)")


def run(args) -> int:
    if args.what == "tables":
        from mtpsd.plotting.data import load_paper_results, read_results
        from mtpsd.reporting.tables import write_tables

        paths = write_tables(read_results(args.results), load_paper_results(), args.out_dir)
        print(f"tables -> {', '.join(map(str, paths))}")
        return 0
    from mtpsd.reporting.report import build_report

    numbers = build_report(args.summary_dir, args.figures_dir, args.generated_dir, args.out,
                           task=args.task, tau=args.tau)
    print(f"report -> {args.out} ({len(numbers)} numbers)")
    return 0
