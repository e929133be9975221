"""The ablation section of the report: our ablation runs beside the paper's ablation tables.

Inputs: ``results.csv`` (its ``ablation`` and ``ablation_key`` columns, ``mtpsd.reporting.summarize``)
and the paper's rows (tables ``abl-l3-suprv-evals-pt1/pt2``, ``abl-l3-data-evals`` and the
reference ``math-evals`` ``main`` rows of L3.1-8B-Magpie, GSM8K).

- groups: an ablation run is compared with the reference run of the same ``ablation_key``
  (same base model, seed, k_max, lr, warm-up, steps, training seed): :func:`ablation_groups`.
- table: per ablation and decoding setting (step 0 at k=1, each Static k, each ConfAdapt
  tau of our sweep), our accuracy ± standard error and effective k (± its SD over chunks),
  and the paper's at the same setting: :func:`ablation_table`.
- claims: the gap at matched effective k, ``gap = mean_p [acc_abl(p) - acc_ref(eff_k_p)]``
  over the ablation's ConfAdapt points ``p`` whose effective k lies inside the reference's
  accuracy-vs-effective-k curve (its ConfAdapt points and Static k=1 at 1.0, linearly
  interpolated); without such a point, over the Static k >= 2 both ran (same k). The
  paper's claim is the sign of the same gap on its own rows (it states no numbers or
  tests for the ablations); ours holds it when our gap has the same sign. ``se`` is the
  mean of the points' combined standard errors ``sqrt(se_abl^2 + se_ref^2)``: a gap
  smaller than it is within noise, said so in the text (the direction is still judged).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtpsd.ablations import LABELS, OPTIONS, PAPER_VARIANT, REFERENCE
from mtpsd.plotting.data import final_rows, task_rows

PAPER_MODEL = "L3.1-8B-Magpie"
PAPER_ABLATION_TABLES = ("abl-l3-suprv-evals-pt1", "abl-l3-suprv-evals-pt2", "abl-l3-data-evals")
HOLDS, FAILS, NO_DATA = "holds", "does not hold", "no data"
SOURCE = ("paper, ablation tables (abl-l3-suprv-evals-pt1/pt2, abl-l3-data-evals): the direction of "
          "its own numbers; the paper gives no test")


def has_ablations(results: pd.DataFrame) -> bool:
    """Whether ``results`` has an ablation run (a run whose config sets an ablation option)."""
    return "ablation" in results and results["ablation"].fillna(REFERENCE).ne(REFERENCE).any()


def ablation_groups(results: pd.DataFrame) -> list[dict]:
    """``[{"reference": run, "ablations": {name: run}}]`` per ``ablation_key`` that has both a
    reference run and an ablation run; runs in name order."""
    if not has_ablations(results):
        return []
    runs = results.dropna(subset=["ablation", "ablation_key"]).drop_duplicates("run")
    out = []
    for _, g in runs.sort_values("run").groupby("ablation_key", sort=False):
        refs = g[g["ablation"] == REFERENCE]["run"].tolist()
        found = {r.ablation: r.run for r in g.itertuples() if r.ablation != REFERENCE}
        order = [*OPTIONS, *sorted(set(found) - set(OPTIONS))]  # the paper's order, then combinations
        abl = {name: found[name] for name in order if name in found}
        if refs and abl:
            out.append({"reference": refs[0], "ablations": abl})
    return out


_STRATEGY_ORDER = {"baseline_step0": 0, "static": 1, "confadapt": 2, "verify": 3}


def sweep(rows: pd.DataFrame) -> pd.DataFrame:
    """Final sweep and step-0 baseline of one run/variant, one row per (strategy, param), in
    reading order: step 0, Static k up, ConfAdapt tau down, verify."""
    rows = rows.drop_duplicates(["strategy", "param"])
    if rows.empty:
        return rows
    order = rows["strategy"].map(_STRATEGY_ORDER).astype(float).fillna(9.0)
    key = order * 1e3 + rows["param"].where(rows["strategy"] != "confadapt", -rows["param"])
    return rows.loc[key.sort_values(kind="stable").index]


def paper_sweep(paper: pd.DataFrame, variant: str, task: str = "gsm8k") -> pd.DataFrame:
    """The paper's L3.1-8B-Magpie rows of one variant ("main" = the reference)."""
    tables = PAPER_ABLATION_TABLES if variant != "main" else ("math-evals",)
    sel = (paper["model"] == PAPER_MODEL) & (paper["variant"] == variant) & (paper["task"] == task) \
        & paper["table"].isin(tables) & (paper["metric"] == "accuracy_pct")
    return sweep(paper[sel])


def _curve(sw: pd.DataFrame) -> pd.DataFrame:
    """Accuracy vs effective k of a sweep: Static k=1 and every ConfAdapt point, by eff_k."""
    k1 = sw[(sw["strategy"] == "static") & np.isclose(sw["param"], 1)]
    ca = sw[sw["strategy"] == "confadapt"]
    return pd.concat([k1, ca]).dropna(subset=["eff_k", "value"]).sort_values("eff_k")


def _se(a, b) -> float:
    sa, sb = (float(x) if pd.notna(x) else 0.0 for x in (a, b))
    return float(np.hypot(sa, sb))


def matched_gap(abl: pd.DataFrame, ref: pd.DataFrame) -> dict | None:
    """Accuracy gap ablation − reference at matched effective k (module docstring), or None."""
    curve = _curve(ref)
    points = []
    if len(curve) >= 2:
        lo, hi = curve["eff_k"].min(), curve["eff_k"].max()
        for _, r in abl[abl["strategy"] == "confadapt"].dropna(subset=["eff_k", "value"]).iterrows():
            if lo <= r["eff_k"] <= hi:
                i = int(np.searchsorted(curve["eff_k"].to_numpy(), r["eff_k"]))
                near = curve.iloc[min(i, len(curve) - 1)]
                points.append((f"τ={r['param']:g} at k={r['eff_k']:.2f}",
                               float(r["value"] - np.interp(r["eff_k"], curve["eff_k"], curve["value"])),
                               _se(r["value_se"], near["value_se"])))
    basis = "ConfAdapt, matched effective k"
    if not points:
        basis = "Static k, same k"
        ref_static = ref[(ref["strategy"] == "static") & (ref["param"] >= 2)].set_index("param")
        for _, r in abl[(abl["strategy"] == "static") & (abl["param"] >= 2)].iterrows():
            if r["param"] in ref_static.index:
                rr = ref_static.loc[r["param"]]
                points.append((f"k={r['param']:g}", float(r["value"] - rr["value"]), _se(r["value_se"], rr["value_se"])))
    if not points:
        return None
    return {"gap": float(np.mean([p[1] for p in points])), "se": float(np.mean([p[2] for p in points])),
            "n": len(points), "basis": basis, "points": points}


def _direction(name: str, gap: float) -> str:
    word = "higher" if gap > 0 else "lower"
    return f"{LABELS.get(name, name)}: {word} accuracy than the reference at matched effective k"


def ablation_claims(results: pd.DataFrame, paper: pd.DataFrame, task: str) -> list[dict]:
    """One claim per ablation run: the paper's direction, its gap, our gap, whether ours holds it."""
    rows = final_rows(task_rows(results, task))
    p_ref = paper_sweep(paper, "main", "gsm8k")
    out = []
    for group in ablation_groups(results):
        ref = sweep(rows[rows["run"] == group["reference"]])
        for name, run in group["ablations"].items():
            p_abl = paper_sweep(paper, PAPER_VARIANT.get(name, ""), "gsm8k")
            p_gap = matched_gap(p_abl, p_ref) if not p_abl.empty else None
            ours = matched_gap(sweep(rows[rows["run"] == run]), ref)
            claim = {"ablation": name, "run": run, "reference": group["reference"], "paper": p_gap, "ours": ours,
                     "statement": _direction(name, p_gap["gap"]) if p_gap else
                     f"{LABELS.get(name, name)}: the paper reports no GSM8K row"}
            if p_gap is None or ours is None:
                claim["status"] = NO_DATA
            else:
                claim["status"] = HOLDS if np.sign(ours["gap"]) == np.sign(p_gap["gap"]) and ours["gap"] != 0 else FAILS
            out.append(claim)
    return out


def _fmt(v, se=None, digits=1) -> str:
    if v is None or pd.isna(v):
        return "–"
    return f"{v:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None and pd.notna(se) else "")


def _setting(strategy: str, param: float) -> str:
    return {"baseline_step0": "step 0, k=1", "static": f"Static k={param:g}",
            "confadapt": f"ConfAdapt τ={param:g}", "verify": f"verify k={param:g}"}[strategy]


def ablation_table(results: pd.DataFrame, paper: pd.DataFrame, task: str) -> list[str]:
    """Markdown: per ablation (reference first) and setting, ours and the paper's accuracy and
    effective k at the same setting (the paper's L3.1-8B-Magpie GSM8K ablation rows)."""
    rows = final_rows(task_rows(results, task))
    lines = [f"| ablation | run | setting | accuracy (%) | effective k | paper accuracy (%) | paper effective k |",
             "|---|---|---|---|---|---|---|"]
    for group in ablation_groups(results):
        for name, run in [(REFERENCE, group["reference"]), *group["ablations"].items()]:
            p = paper_sweep(paper, PAPER_VARIANT.get(name, ""), "gsm8k").set_index(["strategy", "param"])
            for _, r in sweep(rows[rows["run"] == run]).iterrows():
                key = (r["strategy"], r["param"])
                pr = p.loc[key] if key in p.index else None
                effk = _fmt(r["eff_k"], r["eff_k_sd"] if r["strategy"] == "confadapt" else None, 2)
                p_acc = _fmt(pr["value"], pr["value_se"]) if pr is not None else "–"
                p_effk = _fmt(pr["eff_k"], pr["eff_k_sd"] if r["strategy"] == "confadapt" else None, 2) \
                    if pr is not None else "–"
                lines.append(f"| {LABELS.get(name, name)} | `{run}` | {_setting(*key)} | "
                             f"{_fmt(r['value'], r['value_se'])} | {effk} | {p_acc} | {p_effk} |")
    return lines


def _gap_text(g: dict | None, *, detail: bool = True) -> str:
    if g is None:
        return "no matched points"
    noise = " (within noise)" if abs(g["gap"]) < g["se"] else ""
    text = f"{g['gap']:+.1f} ± {g['se']:.1f} points{noise}; {g['basis']}, {g['n']} point(s)"
    if detail:
        text += ": " + ", ".join(f"{label}: {v:+.1f}" for label, v, _ in g["points"])
    return text


def claims_lines(claims: list[dict]) -> list[str]:
    lines = ["| ablation | paper's claim | paper (its rows) | ours | direction on our runs |",
             "|---|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {LABELS.get(c['ablation'], c['ablation'])} (`{c['run']}` vs `{c['reference']}`) | "
                     f"{c['statement']} | {_gap_text(c['paper'], detail=False)} | {_gap_text(c['ours'])} | **{c['status']}** |")
    return lines


def claims_numbers(claims: list[dict]) -> dict[str, float]:
    out = {}
    for c in claims:
        for who in ("paper", "ours"):
            if c[who] is not None:
                out[f"ablations.{c['run']}.{who}_gap"] = c[who]["gap"]
                out[f"ablations.{c['run']}.{who}_gap_se"] = c[who]["se"]
    return out


def report_section(results: pd.DataFrame, paper: pd.DataFrame, task: str, figure_link: str | None) -> tuple[list[str], dict]:
    """Markdown lines of the report's ablation section and its numbers (empty without ablations)."""
    if not ablation_groups(results):
        return [], {}
    claims = ablation_claims(results, paper, task)
    held = sum(c["status"] == HOLDS for c in claims)
    judged = sum(c["status"] != NO_DATA for c in claims)
    md = ["## Ablations", "",
          "Each ablation run sets one option of the paper's recipe (`mtpsd.ablations`; tiny: "
          "`config/ablations.yaml`, paper: `config/paper_ablations.yaml`) and is compared with the "
          "reference run trained alike (same base model, seed, k_max, lr, steps). The paper's "
          f"numbers are {PAPER_MODEL} on GSM8K (its ablation tables); ours are `{task}`. "
          "Regenerate: `snakemake --cores 2 --configfile config/ablations.yaml paper/report.md`.", "",
          "### The paper's ablation claims on our runs", "",
          f"Gap = ablation − reference accuracy at matched effective k ({SOURCE}). "
          f"Direction held on our runs: {held} of {judged}.", ""]
    md += claims_lines(claims) + [""]
    md += ["### Ablation table (± standard error; effective k ± SD over chunks)", ""]
    md += ablation_table(results, paper, task) + [""]
    if figure_link:
        from mtpsd.plotting import ABLATION_FIGURE

        stem, caption = ABLATION_FIGURE
        md += [f"### {stem}", "", f"![{caption}]({figure_link})", "", caption,
               f"Regenerate: `snakemake --cores 2 --configfile config/ablations.yaml figures/{stem}.png` "
               "(`mtpsd plot ablations ...`).", ""]
    nums = claims_numbers(claims)
    nums["ablations.held"] = held
    nums["ablations.judged"] = judged
    return md, nums
