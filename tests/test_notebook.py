"""paper/explore.ipynb: committed without outputs, and every cell runs on the fixture summaries.

The notebook is executed headlessly with nbclient on the ``python3`` kernel. jupyter_client
replaces a kernelspec's leading ``python`` with ``sys.executable``, so the kernel is this
venv's interpreter; the test checks that by asking the kernel for ``sys.executable``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "paper" / "explore.ipynb"
FIX = Path(__file__).parent / "fixtures" / "summary"


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "notebook has no code cells"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {i} has outputs: strip them before committing"
        assert cell.execution_count is None, f"code cell {i} has execution_count {cell.execution_count}"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "RESULTS" in tagged[0].source, "one papermill 'parameters' cell with RESULTS"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.fixture
def fixture_results(tmp_path: Path) -> Path:
    """A results/ tree from the fixtures: summary CSVs and one run's two decode files."""
    summary = tmp_path / "results" / "summary"
    decode = tmp_path / "results" / "runs" / "tiny" / "decode"
    summary.mkdir(parents=True)
    decode.mkdir(parents=True)
    for name in ("results.csv", "train_metrics.csv", "confidence_quality_tiny.csv"):
        shutil.copy(FIX / name, summary / name)
    for name in ("static-k1.jsonl", "confadapt-tau0.9.jsonl"):
        shutil.copy(FIX / "decode" / name, decode / name)
    return tmp_path / "results"


def _execute(nb, cwd: Path) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.fail("no 'python3' kernelspec: `pip install ipykernel` (dev extra) provides it, "
                    "or run `.venv/bin/python -m ipykernel install --sys-prefix`")
    NotebookClient(nb, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(cwd)}}).execute()


def _outputs(cell, mime: str) -> list[str]:
    return [o["data"][mime] for o in cell.outputs if mime in o.get("data", {})]


def test_executes_on_fixtures(fixture_results: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MTPSD_RESULTS_DIR", str(fixture_results))
    monkeypatch.delenv("MTPSD_DECODE_DIR", raising=False)
    monkeypatch.delenv("MTPSD_RUN", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    _execute(nb, tmp_path)

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    pngs = [p for c in code for p in _outputs(c, "image/png")]
    # pareto, wall-clock, training, chunk distributions
    assert len(pngs) >= 4, f"expected >= 4 figures, got {len(pngs)}"
    assert all(len(p) > 5000 for p in pngs), "a figure output is suspiciously small"
    html = "\n".join(h for c in code for h in _outputs(c, "text/html"))
    assert "Static k=1" in html and "±" in html  # strategies table with standard errors
    assert "L3.1-8B-Magpie" in html  # joined with the paper's numbers
    assert "static-k1" in html and "confadapt-tau0.9" in html and "<sup" in html  # side by side
    assert "run tiny:" in "".join(o.get("text", "") for c in code for o in c.outputs)
    kernel_python = code[-1].outputs[0]["text"].strip()
    assert Path(kernel_python).resolve() == Path(sys.executable).resolve(), \
        f"kernel runs {kernel_python}, tests run {sys.executable}"


def test_broken_parameter_fails(fixture_results: Path, tmp_path: Path, monkeypatch):
    """A papermill-style override after the parameters cell reaches the library, and a
    failing cell makes execution fail (here: a prompt index past the decode file)."""
    monkeypatch.delenv("MTPSD_RESULTS_DIR", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        f"RESULTS = {str(fixture_results)!r}\nPROMPT_INDEX = 99"))
    with pytest.raises(CellExecutionError, match="prompt index 99 out of range"):
        _execute(nb, tmp_path)
