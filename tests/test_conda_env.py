"""`snakemake --use-conda` builds the rule environment wherever Snakemake puts it.

Conda is not installable on the test machines, so a stand-in `conda` on PATH answers
Snakemake's checks and, for `conda env create --file F --prefix P`, does what conda does
with the `pip:` part of F (conda/env/installers/pip.py): writes the lines to a
requirements file in F's directory and runs pip from there. Here pip runs as a dry run
against the test venv (`--no-index --no-deps`): the project must resolve to this
checkout, and every pinned line must already be satisfied by the installed versions.
The real Snakemake decides where F lies (a copy under --conda-prefix) and which
environment variables pip sees.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_workflow import SNAKEMAKE, VENV_ENV

FAKE_CONDA = textwrap.dedent('''\
    #!{python}
    import json, os, subprocess, sys
    import yaml

    args = sys.argv[1:]
    if args == ["--version"]:
        print("conda 24.11.3")
    elif args[:2] == ["info", "--json"]:
        print(json.dumps({{"conda_prefix": {base!r}, "platform": "linux-64"}}))
    elif args[:1] == ["clean"]:
        pass
    elif args[:2] == ["config", "--get"]:
        print(json.dumps({{"get": {{"channel_priority": "strict"}}}}))
    elif args[:2] == ["env", "create"]:
        env_file, prefix = args[args.index("--file") + 1], args[args.index("--prefix") + 1]
        deps = yaml.safe_load(open(env_file))["dependencies"]
        pip_lines = next(d["pip"] for d in deps if isinstance(d, dict))
        workdir = os.path.dirname(os.path.abspath(env_file))  # conda runs pip from here
        req = os.path.join(workdir, "condaenv.test.requirements.txt")
        with open(req, "w") as f:
            f.write("\\n".join(pip_lines))
        proc = subprocess.run([{python!r}, "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps",
                               "--no-build-isolation", "--quiet", "--report", {report!r}, "-r", req], cwd=workdir)
        if proc.returncode:
            sys.exit(proc.returncode)
        os.makedirs(prefix)
    else:
        sys.exit(f"stand-in conda: unsupported command {{args}}")
    ''')


def _fake_conda(tmp_path: Path) -> tuple[dict, Path]:
    bin_dir, report = tmp_path / "bin", tmp_path / "pip-report.json"
    bin_dir.mkdir()
    conda = bin_dir / "conda"
    conda.write_text(FAKE_CONDA.format(python=sys.executable, base=str(tmp_path / "base"), report=str(report)))
    conda.chmod(0o755)
    env = dict(VENV_ENV, PATH=f"{bin_dir}:{VENV_ENV['PATH']}")
    env.pop("MTPSD_SOURCE", None)
    return env, report


@pytest.mark.workflow
def test_rule_env_installs_this_checkout_from_any_prefix_and_directory(tmp_path):
    import subprocess

    env, report = _fake_conda(tmp_path)
    workdir, prefix = tmp_path / "elsewhere" / "work", tmp_path / "envs" / "conda"
    workdir.mkdir(parents=True)
    proc = subprocess.run(
        [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
         "--configfile", str(REPO / "config" / "config.yaml"), "--use-conda", "--conda-prefix", str(prefix),
         "--conda-create-envs-only", "--cores", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    copies = list(prefix.glob("*.yaml"))
    assert len(copies) == 1, out  # Snakemake's copy of workflow/envs/mtp.yaml, under --conda-prefix
    installs = json.loads(report.read_text())["install"]
    # only the project is installed: every pinned line is already satisfied by the test venv
    assert [i["metadata"]["name"] for i in installs] == ["mtpsd"], installs
    info = installs[0]["download_info"]
    assert info["url"] == REPO.as_uri() and info["dir_info"].get("editable") is True


def test_rule_env_names_the_project_by_no_relative_path():
    import yaml

    env = yaml.safe_load((REPO / "workflow" / "envs" / "mtp.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    local = [line for line in pip if "==" not in line]
    assert local == ["-e ${MTPSD_SOURCE}"], local
    assert "export_source_dir(workflow.basedir)" in (REPO / "workflow/rules/common.smk").read_text()


def test_export_source_dir_sets_an_absolute_path(monkeypatch, tmp_path):
    from mtpsd.workflow_env import SOURCE_VAR, export_source_dir

    monkeypatch.delenv(SOURCE_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "repo").mkdir()
    assert export_source_dir("repo") == os.environ[SOURCE_VAR] == str(tmp_path / "repo")
