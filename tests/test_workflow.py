"""The DAG: dry runs for the default and every overlay, the linter, and (slow) one full
run of the embedded default, shrunk by tests/fixtures/ci.yaml, in a scratch copy."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
OVERLAYS = {
    "default": [],
    "smol": ["config/smol.yaml"],
    "smol-offline": ["config/smol.yaml", "config/offline.yaml"],
    "paper": ["config/paper.yaml"],
    "seeds": ["config/seeds.yaml"],
    "paper-1gpu": ["config/paper.yaml", "config/paper_1gpu.yaml"],
    "ablations": ["config/ablations.yaml"],
    "paper-ablations": ["config/paper.yaml", "config/paper_ablations.yaml"],
    "published": ["config/paper.yaml", "config/published.yaml"],
    "published-general": ["config/paper.yaml", "config/published.yaml", "config/general.yaml"],
    "paper-1gpu-qwen": ["config/paper.yaml", "config/paper_1gpu.yaml", "config/qwen3_4b.yaml"],
}
# library messages a user cannot act on (mtpsd.library_noise; the schema's dialect)
NOISE = ("No validator found", "Failed to load", "register_constant()")


# the venv's bin first: `mtpsd` for the rules, `shfmt` (shfmt-py) for snakefmt
VENV_ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def snakemake(*args, cwd=REPO, timeout=600):
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=VENV_ENV)


def _scratch_copy(dest: Path) -> None:
    """The workflow files of the repository (the package itself is installed)."""
    for name in ("Snakefile", "workflow", "config", "profiles", "tests/fixtures/ci.yaml"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)


def job_stats(out: str) -> dict[str, int]:
    """Snakemake's "Job stats" table of a dry run: rule -> jobs (and "total")."""
    return {w[0]: int(w[1]) for w in (line.split() for line in out.splitlines())
            if len(w) == 2 and w[1].isdigit()}


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """`snakemake -n --quiet rules` of each overlay, run once per module (output, return code)."""
    root = tmp_path_factory.mktemp("dry")
    _scratch_copy(root)
    cache = {}

    def run(name):
        if name not in cache:
            args = ["-n", "--quiet", "rules"] + (["--configfile", *OVERLAYS[name]] if OVERLAYS[name] else [])
            proc = snakemake(*args, cwd=root)
            cache[name] = (proc.stdout + proc.stderr, proc.returncode)
        return cache[name]

    return run


@pytest.mark.workflow
@pytest.mark.parametrize("name", OVERLAYS)
def test_dry_run_builds_the_dag(name, dry_runs):
    out, rc = dry_runs(name)
    assert rc == 0, out
    trains = not name.startswith("published")
    for rule in ("prepare_data", "evaluate", "summarize") + (("add_mtp_token", "train_mtp") if trains else ()):
        assert rule in out, f"{rule} missing from the {name} DAG:\n{out}"
    # the plan prints once, before the DAG; no library noise
    assert out.count("# GPU plan for") + out.count("# CPU plan") == 1, out
    assert not [n for n in NOISE if n in out], out


@pytest.mark.workflow
@pytest.mark.parametrize("name", ["published", "published-general", "paper-1gpu-qwen"])
def test_the_readmes_quick_dry_run_fits_on_a_screen(name, tmp_path):
    """`snakemake -n -q --configfile ...` (README): the plan, one table of GPU jobs and hours per
    rule, and Snakemake's header: at most 60 lines (a plain `snakemake -n` prints thousands)."""
    _scratch_copy(tmp_path)
    proc = snakemake("-n", "-q", "--configfile", *OVERLAYS[name], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert len(out.splitlines()) <= 60 and "| **total** |" in out, out


@pytest.mark.workflow
def test_seed_runs_pretrain_their_own_base_model_from_their_own_seed(tmp_path):
    _scratch_copy(tmp_path)
    proc = snakemake("-n", "-p", "--configfile", "config/seeds.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for n in range(1, 5):
        assert (f"--config results/runs/tiny-seed{n}/config.json" in out
                and f"--out results/models/tiny-seed{n}" in out), f"seed {n} has no base model of its own"
    assert out.count("rule pretrain_base:") == 5 and out.count("rule train_mtp:") == 5


@pytest.mark.workflow
def test_several_trainings_share_the_cores(tmp_path):
    """One run trains on both cores; the seeds overlay's five train one thread each, two at a time."""
    _scratch_copy(tmp_path)
    default = snakemake("-n", "-p", "--cores", "2", cwd=tmp_path)
    seeds = snakemake("-n", "-p", "--cores", "2", "--configfile", "config/seeds.yaml", cwd=tmp_path)
    assert default.returncode == 0 and seeds.returncode == 0, default.stderr + seeds.stderr
    assert default.stdout.count("--threads 2") == 1 and default.stdout.count("threads: 2") == 2  # pretrain, train
    assert seeds.stdout.count("--threads 1") == 5 and "threads: 2" not in seeds.stdout
    wide = snakemake("-n", "-p", "--cores", "16", "--configfile", "config/seeds.yaml", cwd=tmp_path)
    assert wide.stdout.count("threads: 3") == 5, "16 cores over 5 trainings: 3 threads each"


@pytest.mark.workflow
def test_published_overlay_is_the_gsm8k_table_without_training(dry_runs):
    """`snakemake -n --quiet rules --configfile config/paper.yaml config/published.yaml`: the
    paper's GSM8K table for both checkpoints (19 settings + step 0 each), their imports and
    batch-1 speed runs, the figures; nothing trains; the plan gives H100 hours per rule."""
    out, rc = dry_runs("published")
    assert rc == 0, out
    jobs = job_stats(out)
    assert (jobs["import_checkpoint"], jobs["import_base"], jobs["evaluate"], jobs["decode"]) == (2, 2, 40, 38), out
    assert "train_mtp" not in jobs and "add_mtp_token" not in jobs, out
    plan = out[out.index("# GPU plan for H100 SXM 80 GB"):]
    rows = [line for line in plan.splitlines() if line.startswith("| ") and "mtpsd_gsm8k_cot" in line]
    assert len(rows) == 2 and all(r.endswith("| estimate (model) |") for r in rows), plan
    assert {line.split(" | ")[2] for line in plan.splitlines() if " | evaluate | " in line} == {"mtpsd_gsm8k_cot"}


@pytest.mark.workflow
def test_an_overlay_without_paper_yaml_stops_the_dag(tmp_path):
    _scratch_copy(tmp_path)
    proc = snakemake("-n", "--configfile", "config/paper_ablations.yaml", cwd=tmp_path)
    assert proc.returncode != 0
    assert "requires: paper" in proc.stdout + proc.stderr and "config/paper.yaml" in proc.stdout + proc.stderr


@pytest.mark.workflow
def test_bad_config_stops_the_dag_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  k_maxx: 3\n")
    _scratch_copy(tmp_path)
    proc = snakemake("-n", "--configfile", str(bad), cwd=tmp_path)
    assert proc.returncode != 0
    assert "k_maxx" in proc.stdout + proc.stderr


def test_every_figure_has_a_report_caption_and_every_caption_is_used():
    """The report() flags of figures.smk name one workflow/report/<stem>.rst per figure (figure 11
    included, which the CI report does not reach) and per table; none is missing or left over."""
    from mtpsd.plotting import ABLATION_FIGURE, FIGURES

    report_dir = REPO / "workflow" / "report"
    flagged = re.findall(r'report\(\s*f?"([^"]+)",\s*caption="\.\./report/(\w+)\.rst"',
                         (REPO / "workflow" / "rules" / "figures.smk").read_text())
    stems = [stem for _, stem in flagged]
    figures = [stem for stem, _ in FIGURES.values()] + [ABLATION_FIGURE[0]]
    assert [s for s in stems if s.startswith("fig")] == figures
    assert all(path.endswith((f"{stem}.png", "{ABLATION_FIGURE[0]}.png")) for path, stem in flagged if stem in figures)
    assert sorted(stems) == sorted(p.stem for p in report_dir.glob("*.rst") if p.stem != "workflow")
    assert 'report: "workflow/report/workflow.rst"' in (REPO / "Snakefile").read_text()


@pytest.mark.workflow
def test_lint_is_clean():
    proc = snakemake("--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.workflow
def test_rules_are_snakefmt_formatted():
    snakefmt = str(Path(sys.executable).with_name("snakefmt"))
    proc = subprocess.run([snakefmt, "--check", "Snakefile", "workflow/rules", "tests/fixtures/gpu_limit"],
                          cwd=REPO,
                          capture_output=True, text=True, env=VENV_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.workflow
def test_full_dag_runs_end_to_end(ci_dag):
    """Every rule runs for real on the shrunk default: data, tiny base model, <MTP>,
    training, decoding, the evaluation sweep, summaries, every figure and the report."""
    figures = sorted((ci_dag / "figures").glob("fig*.png"))
    assert len(figures) == 10 and all(f.stat().st_size > 5000 for f in figures)
    report = (ci_dag / "paper" / "report.md").read_text()
    assert "Static" in report and "ConfAdapt" in report and "## Ablations" not in report
    import pandas as pd

    results = pd.read_csv(ci_dag / "results" / "summary" / "results.csv")
    assert {"static", "confadapt", "verify", "baseline_step0"} <= set(results["strategy"])
    # a second invocation finds nothing to do
    again = snakemake("-n", "--configfile", "tests/fixtures/ci.yaml", cwd=ci_dag)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


def _report_data(page: str, name: str):
    """A JSON value the HTML report embeds as `var <name> = ...;` in its <script id=<name>>."""
    m = re.search(rf'<script id="{name}">\s*var \w+ = (.*?);\s*</script>', page, re.S)
    assert m, f"no {name} in the report"
    return json.loads(m.group(1))


def _plain(fragment: str) -> str:
    """The text of an HTML fragment, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def _caption(stem: str) -> str:
    """The RST caption of a figure or table, as text (inline literals unquoted)."""
    return " ".join((REPO / "workflow" / "report" / f"{stem}.rst").read_text().replace("``", "").split())


def _build_html_report(root: Path, *configfiles: str) -> tuple[dict, dict, str]:
    """`snakemake --report results/report.html` (what `make report` runs) in `root`, offline:
    the report's results, categories and workflow description."""
    proc = snakemake("--report", "results/report.html", "--configfile", *configfiles, cwd=root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "downloading" not in out.lower(), "a report asset is missing from the installed snakemake"
    page = (root / "results" / "report.html").read_text(encoding="utf-8")
    return _report_data(page, "results"), _report_data(page, "categories"), _report_data(page, "workflow-desc")


def _assert_figures_in_report(root: Path, results: dict, categories: dict) -> list[str]:
    """Every figure PNG under root/figures is in the report byte for byte, with its caption."""
    figures = sorted(f"figures/{p.name}" for p in (root / "figures").glob("fig*.png"))
    for fig in figures:
        entry = results.get(fig)
        assert entry is not None, f"{fig} is not in the report"
        assert entry["mime_type"] == "image/png"
        assert base64.b64decode(entry["data_uri"].split("base64,", 1)[1]) == (root / fig).read_bytes(), fig
        assert _plain(entry["caption"]) == _caption(Path(fig).stem), fig
    assert sorted(f for files in categories["Figures"].values() for f in files) == figures
    return figures


@pytest.mark.slow
@pytest.mark.workflow
def test_html_report_has_every_figure_with_its_caption(ci_dag):
    """Snakemake's HTML report of the run above: the ten figures (captions from
    workflow/report/), the two tables and paper/report.md, and the workflow description."""
    results, categories, desc = _build_html_report(ci_dag, "tests/fixtures/ci.yaml")
    figures = _assert_figures_in_report(ci_dag, results, categories)
    assert len(figures) == 10
    assert set(categories["Figures"]) == {"Training", "Decoding"}
    tables = {"paper/generated/table01_strategies.md": "table01_strategies",
              "paper/generated/table02_paper_vs_ours.md": "table02_paper_vs_ours",
              "paper/report.md": "paper_report"}
    assert categories["Tables"] == {"Decoding": list(tables)[:2], "Claims": ["paper/report.md"]}
    for path, stem in tables.items():
        assert _plain(results[path]["caption"]) == _caption(stem), path
        assert results[path]["job_properties"]["rule"] in ("make_tables", "make_report")
    assert "Runs in this report: tiny." in _plain(desc)


ABLATION_RUNS = ("tiny-abl", "tiny-gt", "tiny-soft", "tiny-bda", "tiny-static-k", "tiny-prefix")


@pytest.mark.slow
@pytest.mark.workflow
def test_ablation_overlay_runs_end_to_end(ci_dag):
    """config/ablations.yaml on top of the shrunk default, shrunk itself by
    tests/fixtures/ci_ablations.yaml, runs for real: the six ablation-family runs train,
    decode as trained (BDA with its masks attending both ways) and are evaluated, and the
    report gains the ablation table, claims and figure 11; the default's outputs are reused."""
    overlay = ("tests/fixtures/ci.yaml", "config/ablations.yaml", "tests/fixtures/ci_ablations.yaml")
    shutil.copy(REPO / overlay[-1], ci_dag / overlay[-1])
    before = (ci_dag / "results" / "runs" / "tiny" / "checkpoint").stat().st_mtime
    proc = snakemake("--cores", "2", "--configfile", *overlay, cwd=ci_dag, timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert (ci_dag / "results" / "runs" / "tiny" / "checkpoint").stat().st_mtime == before
    import pandas as pd

    results = pd.read_csv(ci_dag / "results" / "summary" / "results.csv")
    final = results[results["strategy"] != "baseline_step0"]
    for run in ABLATION_RUNS:
        sweep = final[final["run"] == run]
        assert set(sweep["strategy"]) == {"static", "confadapt"}, run
        assert sorted(set(sweep[sweep["strategy"] == "static"]["param"])) == [1, 2, 4], run
    ablation_of = results.drop_duplicates("run").set_index("run")["ablation"]
    assert [ablation_of[run] for run in ABLATION_RUNS] == ["reference", "gt", "soft", "bda", "static_k", "prefix"]
    report = (ci_dag / "paper" / "report.md").read_text()
    section = report[report.index("## Ablations"):]
    assert "### The paper's ablation claims on our runs" in section
    for run in ABLATION_RUNS[1:]:  # each compared with the family's own reference, not with `tiny`
        assert f"(`{run}` vs `tiny-abl`)" in section, run
    fig = ci_dag / "figures" / "fig11_ablations.png"
    assert fig.exists() and fig.stat().st_size > 5000
    report_results, categories, _ = _build_html_report(ci_dag, *overlay)  # figure 11 with its caption too
    assert len(_assert_figures_in_report(ci_dag, report_results, categories)) == 11
    again = snakemake("-n", "--configfile", *overlay, cwd=ci_dag)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.workflow
def test_an_edited_value_reruns_the_steps_that_read_it_in_one_invocation(ci_dag, tmp_path):
    """Resolved configs are refreshed before the DAG is built (no resolve job re-runs on a
    params change, which would make Snakemake skip everything downstream of it): a dry run
    after editing decode.max_new_tokens lists the decodes and evaluations that read it."""
    edited = tmp_path / "edited.yaml"
    edited.write_text("decode: {max_new_tokens: 20}\n")
    proc = snakemake("-n", "--configfile", "tests/fixtures/ci.yaml", str(edited), cwd=ci_dag)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    stats = out[out.index("Job stats"):]
    assert "evaluate" in stats and "decode" in stats and "resolve_config" not in stats, stats[:800]


@pytest.mark.workflow
def test_magpie_ablation_trains_on_its_own_data(tmp_path):
    """A run whose data differs from the global data (the Magpie ablation) gets its own
    prepared split; the others train on results/data/train.jsonl."""
    _scratch_copy(tmp_path)
    proc = snakemake("-n", "-p", "--configfile", "config/paper.yaml", "config/paper_ablations.yaml",
                     cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "results/runs/l3-magpie-magpie/data/train.jsonl" in out
    assert "--train results/runs/l3-magpie-magpie/data/train.jsonl" in out
    assert "--train results/data/train.jsonl" in out
    assert "results/runs/l3-magpie-gt/data/" not in out


def _readme_work_table() -> dict[tuple[str, ...], list[str]]:
    """config/README.md's table of the documented commands: overlay files -> its cells."""
    text = (REPO / "config" / "README.md").read_text()
    start = text.index("| overlays after `config/paper.yaml` |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[tuple(re.findall(r"`(config/[^`]+)`", cells[0]))] = cells[1:]
    return rows


@pytest.mark.workflow
def test_config_readme_counts_come_from_the_dry_run(dry_runs):
    """Jobs per rule (the dry run's job stats), forward passes and GPU-hours (the plan) of each
    documented command, as config/README.md states them."""
    from mtpsd.config import merge_sources
    from mtpsd.evaluation.plan import PlanRow, _hours, plan, resolve_runs

    table = _readme_work_table()
    by_files = {tuple(files[1:]): name for name, files in OVERLAYS.items() if files[:1] == ["config/paper.yaml"]}
    assert set(table) == {("config/published.yaml",), ("config/published.yaml", "config/general.yaml"),
                          ("config/paper_1gpu.yaml", "config/qwen3_4b.yaml"), ()}
    for files, cells in table.items():
        out, rc = dry_runs(by_files[files])
        assert rc == 0, out
        jobs = job_stats(out)
        counted = [str(jobs["total"])] + [str(jobs.get(r, 0)) for r in ("evaluate", "decode", "train_mtp")]
        runs = resolve_runs(merge_sources([str(REPO / "config" / f) for f in ("config.yaml", "paper.yaml")]
                                          + [str(REPO / f) for f in files]))
        totals = {}
        for gpu in ("h100", "h200"):
            total = PlanRow("total", "", "")
            for r in plan(runs, [], device=gpu, bench_dir=REPO / "no-bench", results=REPO / "no-results"):
                total.add(r)
            totals[gpu] = total
        computed = counted + [f"{totals['h100'].passes:,}", _hours(totals["h100"].hours), _hours(totals["h200"].hours)]
        assert cells == computed, (files, cells, computed)
