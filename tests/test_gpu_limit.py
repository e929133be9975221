"""One GPU job per GPU: the GPU count the workflow detects (CUDA_VISIBLE_DEVICES, nvidia-smi),
the limit it sets, and a real Snakemake DAG of GPU-declaring jobs under the project's GPU file
(workflow/rules/gpus.smk) and default profile: with one GPU no two GPU jobs overlap in time
(a CPU job runs beside them), with two GPUs (detected or --resources gpu=2) two do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mtpsd.workflow_env import GpuInfo, checkout_dir, detect_gpus, gpu_limit
from tests.conftest import REPO

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
FIXTURE = REPO / "tests" / "fixtures" / "gpu_limit" / "Snakefile"

SMI_TWO_H100 = """#!/bin/sh
echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1111)"
echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2222)"
"""


def _fake_smi(tmp_path: Path, body: str) -> str:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(body)
    smi.chmod(0o755)
    return str(smi)


def test_detect_counts_nvidia_smi_gpus_and_honours_cuda_visible_devices(tmp_path):
    smi = _fake_smi(tmp_path, SMI_TWO_H100)
    two = detect_gpus({}, nvidia_smi=smi)
    assert two.count == 2 and two.names == ("NVIDIA H100 80GB HBM3",) * 2 and two.source == f"{smi} -L"
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "1"}, nvidia_smi=smi).count == 1
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}, nvidia_smi=smi).count == 2
    # CUDA stops at the first empty or negative entry: "" and "-1" hide every GPU
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}, nvidia_smi=smi).count == 0
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, nvidia_smi=smi).count == 0
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "0,-1,1"}, nvidia_smi=smi).count == 1
    # a scheduler's allocation counts even where nvidia-smi is absent (it names no GPU then)
    gone = detect_gpus({"CUDA_VISIBLE_DEVICES": "GPU-1111,GPU-2222"}, nvidia_smi=str(tmp_path / "missing"))
    assert gone.count == 2 and gone.names == ()


def test_no_driver_means_no_gpu(tmp_path):
    none = detect_gpus({}, nvidia_smi=str(tmp_path / "missing"))
    assert none.count == 0 and "no GPU found" in none.source
    failing = _fake_smi(tmp_path, "#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    broken = detect_gpus({}, nvidia_smi=failing)
    assert broken.count == 0 and "exited 9" in broken.source


def test_limit_is_given_else_detected_else_none():
    one = GpuInfo(1, ("NVIDIA H100 80GB HBM3",), "nvidia-smi -L")
    assert gpu_limit(given=None, cluster=False, gpus=one).limit == 1
    assert gpu_limit(given=2, cluster=False, gpus=one).limit == 2  # --resources gpu=N wins
    assert gpu_limit(given=3, cluster=True, gpus=one).limit == 3
    assert gpu_limit(given=None, cluster=True, gpus=one).limit is None  # cluster jobs ask the scheduler
    cpu = gpu_limit(given=None, cluster=False, gpus=GpuInfo(0, (), "no GPU found (x)"))
    assert cpu.limit is None and "on the CPU" in cpu.line()
    assert gpu_limit(given=None, cluster=False, gpus=one).line().startswith("GPU jobs: at most 1 GPU(s) at once")


def test_checkout_dir_is_the_folder_with_pyproject(tmp_path):
    assert checkout_dir(REPO / "workflow") == REPO
    (tmp_path / "wf").mkdir()
    assert checkout_dir(tmp_path / "wf") == tmp_path / "wf"  # no pyproject above: itself


def _run_fixture(tmp_path: Path, *extra: str, visible: str) -> dict[str, tuple[float, float]]:
    """Run the fixture DAG in a scratch directory; (start, end) of each job."""
    work = tmp_path / f"work-{visible or 'none'}-{len(extra)}"
    work.mkdir()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               CUDA_VISIBLE_DEVICES=visible)
    proc = subprocess.run(
        [SNAKEMAKE, "--snakefile", str(FIXTURE), "--directory", str(work),
         "--workflow-profile", str(REPO / "profiles" / "default"), "--cores", "4", *extra],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    times = {}
    for f in sorted((work / "times").glob("*.txt")):
        start, end = (float(x) for x in f.read_text().split())
        times[f.stem] = (start, end)
    assert sorted(times) == ["cpu", "gpu0", "gpu1", "gpu2"], times
    return times


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _gpu_overlaps(times) -> int:
    gpu = [v for k, v in times.items() if k.startswith("gpu")]
    return sum(_overlap(gpu[i], gpu[j]) for i in range(len(gpu)) for j in range(i + 1, len(gpu)))


@pytest.mark.workflow
def test_one_gpu_runs_one_gpu_job_at_a_time_beside_cpu_jobs(tmp_path):
    times = _run_fixture(tmp_path, visible="0")
    assert _gpu_overlaps(times) == 0, times
    assert any(_overlap(times["cpu"], v) for k, v in times.items() if k.startswith("gpu")), times


@pytest.mark.workflow
def test_two_gpus_run_two_gpu_jobs_at_once(tmp_path):
    detected = _run_fixture(tmp_path, visible="0,1")
    assert _gpu_overlaps(detected) >= 1, detected
    given = _run_fixture(tmp_path, "--resources", "gpu=2", visible="0")  # --resources overrides the count
    assert _gpu_overlaps(given) >= 1, given


@pytest.mark.workflow
def test_the_workflow_states_its_gpu_limit(tmp_path):
    """The paper DAG's dry run under one visible GPU names the limit in its plan, and a training
    whose accelerate config launches more processes than there are GPUs (FSDP over 4) is named
    before Snakemake refuses to start it."""
    from tests.test_workflow import _scratch_copy

    _scratch_copy(tmp_path)
    (tmp_path / "fsdp.yaml").write_text("train: {accelerate_config: config/accelerate/fsdp.yaml}\n")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", CUDA_VISIBLE_DEVICES="0")
    proc = subprocess.run([SNAKEMAKE, "-n", "-q", "--configfile", "config/paper.yaml", "fsdp.yaml"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "GPU jobs: at most 1 GPU(s) at once (1 detected by CUDA_VISIBLE_DEVICES=0" in out, out
    assert "train_mtp of qwen3-4b needs 4 GPUs (train.accelerate_config), more than the 1 here" in out, out


@pytest.mark.workflow
def test_doctor_runs_before_any_gpu_job_on_a_gpu_box(tmp_path):
    """With a GPU here every GPU job of the paper DAG waits for `mtpsd doctor`'s checklist
    (results/doctor.txt); a failed check stops the DAG with the checklist on the terminal.
    Without GPUs (the embedded default, CI) the doctor is not in the DAG."""
    from tests.test_workflow import _scratch_copy

    _scratch_copy(tmp_path)
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    paper = ["--configfile", "config/paper.yaml", "config/published.yaml"]

    def snakemake(*args, visible):
        env = dict(os.environ, PATH=path, CUDA_VISIBLE_DEVICES=visible)
        proc = subprocess.run([SNAKEMAKE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        return proc.returncode, proc.stdout + proc.stderr

    rc, out = snakemake("-n", *paper, visible="0")
    assert rc == 0, out
    jobs = out.split("\nrule ")[1:]
    gpu_jobs = [j for j in jobs if j.split(":")[0] in ("train_mtp", "evaluate", "decode", "confidence_quality")]
    assert sum(j.startswith("doctor:") for j in jobs) == 1 and gpu_jobs
    assert all("results/doctor.txt" in j.split("output:")[0] for j in gpu_jobs), out
    rc, out = snakemake("-n", *paper, visible="")
    assert rc == 0 and "rule doctor" not in out, out
    # a real run of the preflight on this machine (torch sees no CUDA GPU): it fails, names why
    rc, out = snakemake("results/doctor.txt", "--cores", "1", *paper, visible="0")
    assert rc != 0 and "[FAIL] gpu: no CUDA GPU visible to torch" in out and "first to fix: gpu" in out, out
    assert not (tmp_path / "results" / "doctor.txt").exists()
