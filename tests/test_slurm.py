"""The workflow through a real SLURM (`--profile profiles/slurm`), started by .ci/slurm.sh.

    bash .ci/slurm.sh        # installs slurm-wlm + munge, starts the daemons, runs this, stops them

Skipped unless SLURM answers (`squeue`). A tiny config runs every stage as sbatch jobs (data
stages, a 20-step pretrain, evaluation, plots); then the outputs are checked and the pretrain
job's own SLURM record must show the GPU that profiles/slurm asks for. Then a pretrain job on the
lane's two-node partition (`two`, two slurmd on 127.0.0.2/127.0.0.3): one torchrun per node
started by scripts/pretrain.sh with srun, CPU/gloo, must end at the weights of one process at the
same global batch.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, copy_workflow, smk, write_yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def slurm_up() -> bool:
    if not shutil.which("squeue"):
        return False
    try:
        return subprocess.run(["squeue", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def lane(tmp_path_factory):
    if not slurm_up():
        pytest.skip("no running SLURM (start one with: bash .ci/slurm.sh)")
    base = Path(os.environ.get("BIGS_SLURM_LANE_DIR") or tmp_path_factory.mktemp("slurm"))
    wf = copy_workflow(base / "wf")
    write_yaml(wf / "lane.yaml", {**TINY, "runs": [{"name": "lane"}]})
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [
        sys.executable, "-m", "snakemake", "pretrain", "inspect",
        "--profile", "profiles/slurm", "--configfile", "lane.yaml",
        "--slurm-no-account", "--slurm-keep-successful-logs", "--jobs", "6",
        "--slurm-init-seconds-before-status-checks", "5",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=wf, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # SIGINT (not SIGTERM) makes Snakemake scancel its jobs
        out, _ = proc.communicate(timeout=120)
        pytest.fail(f"snakemake --profile profiles/slurm did not finish in 900 s:\n{out[-5000:]}")
    (wf / "snakemake.out").write_text(out)
    assert proc.returncode == 0, f"snakemake --profile profiles/slurm failed:\n{out[-8000:]}"
    return wf, out


def test_every_stage_ran_as_a_slurm_job(lane):
    wf, out = lane
    for rule in (
        "process_corpus",
        "shard_corpus",
        "tokenize_shard",
        "mask_shard",
        "inspect_dataset",
        "train_run",
        "evaluate_run",
        "plot_runs",
    ):
        assert f"rule {rule}:" in out, f"{rule} was not run"
        assert (wf / ".snakemake" / "slurm_logs" / f"rule_{rule}").is_dir(), f"{rule}: no sbatch log"
    assert "Job " in out and "has been submitted with SLURM jobid" in out


def test_outputs(lane):
    wf, _ = lane
    for f in (
        "results/pretrain/lane/final/model.safetensors",
        "results/pretrain/lane/final/metrics.jsonl",
        "results/evaluate/lane.json",
        "results/plots/summary.md",
        "results/plots/train_loss.png",
        "results/inspect/enwiki-sample-L128.json",
    ):
        assert (wf / f).is_file() and (wf / f).stat().st_size > 0, f"missing {f}"


def test_pretrain_job_asked_for_a_gpu(lane):
    """profiles/slurm gives train_run `gpu: 1` -> sbatch --gpus=1; SLURM's record shows it."""
    wf, _ = lane
    jobs = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, timeout=30).stdout
    train = [j for j in jobs.splitlines() if "rule_train_run" in j]
    assert train, f"no train_run job in scontrol (MinJobAge too short?):\n{jobs[-3000:]}"
    record = train[-1]
    (wf / "train_run.scontrol.txt").write_text(record)
    assert "gres/gpu=1" in record or "gres:gpu:1" in record, record
    assert "JobState=COMPLETED" in record, record
    others = [j for j in jobs.splitlines() if "rule_mask_shard" in j]
    assert others and all("gpu" not in j for j in others), "data jobs must not hold GPUs"


# ------------------------------------------------------------------ two nodes
SAME_GLOBAL_BATCH = {"hidden_dropout_prob": 0.0, "global_batch_size": 8}


@pytest.fixture(scope="module")
def two_nodes(lane):
    wf, _ = lane
    if "two" not in subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20).stdout:
        pytest.skip("no two-node partition `two` (start the lane with: bash .ci/slurm.sh)")
    runs = [
        {"name": "lane"},
        {"name": "one", **SAME_GLOBAL_BATCH, "per_device_train_batch_size": 8},
        {"name": "two", **SAME_GLOBAL_BATCH, "per_device_train_batch_size": 4},
    ]
    write_yaml(wf / "two.yaml", {**TINY, "runs": runs})
    smk(wf, "results/pretrain/one/final/model.safetensors", "--cores", "2", "--configfile", "two.yaml")  # reference
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [
        sys.executable, "-m", "snakemake", "results/pretrain/two/final/model.safetensors",
        "--profile", "profiles/slurm", "--configfile", "two.yaml",
        "--set-resources", "train_run:nodes=2", "train_run:tasks=2", "train_run:gpu=0",
        "train_run:slurm_partition=two", "train_run:mem_mb=2000", "--set-threads", "train_run=1",
        "--slurm-no-account", "--slurm-keep-successful-logs", "--jobs", "2",
        "--slurm-init-seconds-before-status-checks", "5",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=wf, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        pytest.fail(f"two-node pretrain did not finish in 600 s:\n{out[-5000:]}")
    (wf / "snakemake-two.out").write_text(out)
    log = (wf / "logs" / "train_run" / "two.log").read_text() if (wf / "logs/train_run/two.log").exists() else ""
    assert proc.returncode == 0, f"two-node pretrain failed:\n{out[-5000:]}\n--- train log:\n{log[-5000:]}"
    return wf, log


def test_two_node_job_starts_one_torchrun_per_node_with_srun(two_nodes):
    wf, log = two_nodes
    assert "pretrain.sh: output_dir=results/pretrain/two nodes=2" in log
    assert "--overlap --kill-on-bad-exit=1 --nodes=2 --ntasks=2 --ntasks-per-node=1" in log
    assert "--nnodes=2 --nproc_per_node=1" in log and "--rdzv_backend=c10d --rdzv_endpoint=127.0.0.2:" in log
    assert "device cpu × 2" in log and "global batch 8 (4 × 2 devices × 1 accumulation)" in log
    jobs = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, timeout=30).stdout
    records = [j for j in jobs.splitlines() if "rule_train_run" in j and "Partition=two" in j]
    record = records[-1] if records else ""
    assert "NumNodes=2" in record and "JobState=COMPLETED" in record, record or jobs[-3000:]


def test_two_node_job_ends_at_the_one_process_weights(two_nodes):
    from safetensors.torch import load_file

    wf, _ = two_nodes
    a = load_file(str(wf / "results/pretrain/two/final/model.safetensors"))
    b = load_file(str(wf / "results/pretrain/one/final/model.safetensors"))
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    (wf / "two-node-max-abs-diff.txt").write_text(f"{diff}\n")
    assert diff < 1e-5, diff
