"""Effective k and accuracy under both decoding conventions, per setting (issue 27).

One evaluation per (setting, convention) on one checkpoint and task
(:func:`mtpsd.evaluation.evaluate.evaluate` with ``convention=``): the accuracy lm-eval
scores (the convention's tokens and text), and effective k in both accountings, which each
evaluation records from its one decode (``decode_stats.eff_k_project`` /
``eff_k_authors``)::

    from mtpsd.evaluation.conventions import compare_conventions, conventions_markdown
    rows = compare_conventions(cfg, "results/runs/tiny/checkpoint", "mtpsd_synth_math",
                               ["static-k4", "confadapt-tau0.9"], out_dir="results/conventions/tiny")
    print(conventions_markdown(rows))

Under the project's convention the accuracy and the project's accounting are today's; the
authors' accounting there counts the same tokens the authors' way. Under the authors'
convention every switch is on (full vocabulary and ``p >= tau`` in the model's dtype change
tokens too), and the project's accounting counts those tokens the project's way.
"""

from __future__ import annotations

from pathlib import Path

from mtpsd.decoding.common import CONVENTIONS
from mtpsd.io import atomic_write_json


def convention_row(result: dict) -> dict:
    """The numbers of one evaluation result: setting, convention, accuracy (the task's headline
    metric, percent) ± SE, effective k in both accountings, tokens and stop reasons of each."""
    from mtpsd.reporting.summarize import eval_rows

    rows = eval_rows(result)
    primary = next((r for r in rows if r["metric"] == "accuracy_pct"), rows[0] if rows else {})
    stats = result.get("decode_stats") or {}
    acc = stats.get("accounting") or {}
    return {
        "setting": result["setting"], "convention": result.get("convention"), "n_docs": result.get("n_docs"),
        "metric": primary.get("metric"), "value": primary.get("value"), "value_se": primary.get("value_se"),
        "eff_k": stats.get("eff_k_mean"), "eff_k_project": stats.get("eff_k_project"),
        "eff_k_authors": stats.get("eff_k_authors"),
        **{f"{name}_{key}": acc.get(name, {}).get(key) for name in ("project", "authors")
           for key in ("tokens", "forward_passes", "stopped_by")},
    }


def compare_conventions(cfg, checkpoint: str | Path, task: str, settings: list[str], *,
                        conventions: tuple[str, ...] = CONVENTIONS, out_dir: str | Path | None = None,
                        **evaluate_kwargs) -> list[dict]:
    """Evaluate every setting under every convention; one :func:`convention_row` each (setting
    order, then ``conventions`` order). ``out_dir``: each result JSON is written there as
    ``{setting}.{convention}.json``. ``evaluate_kwargs`` go to ``evaluate`` (``limit``,
    ``data_file``, ``engine``)."""
    from mtpsd.evaluation.evaluate import evaluate

    rows = []
    for setting in settings:
        for conv in conventions:
            result = evaluate(cfg, checkpoint, task, setting, convention=conv, **evaluate_kwargs)
            if out_dir is not None:
                atomic_write_json(Path(out_dir) / f"{setting}.{conv}.json", result)
            rows.append(convention_row(result))
    return rows


def _f(v, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def conventions_markdown(rows: list[dict]) -> str:
    """One table: per setting and convention, accuracy and effective k in both accountings
    (and authors' minus project's)."""
    lines = ["| setting | convention | accuracy (%) | eff. k, project's accounting | eff. k, authors' accounting "
             "| authors' − project's | tokens (project / authors) | passes (project / authors) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = None if r["eff_k_project"] is None or r["eff_k_authors"] is None \
            else r["eff_k_authors"] - r["eff_k_project"]
        acc = "–" if r["value"] is None else f"{r['value']:.1f} ± {r['value_se']:.1f}"
        lines.append(f"| {r['setting']} | {r['convention']} | {acc} | {_f(r['eff_k_project'])} | "
                     f"{_f(r['eff_k_authors'])} | {'–' if diff is None else f'{diff:+.2f}'} | "
                     f"{r['project_tokens']} / {r['authors_tokens']} | "
                     f"{r['project_forward_passes']} / {r['authors_forward_passes']} |")
    return "\n".join(lines) + "\n"
