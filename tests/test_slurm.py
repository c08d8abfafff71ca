"""The workflow through a real SLURM (`--profile profiles/slurm`), started by .ci/slurm.sh.

    bash .ci/slurm.sh        # installs slurm-wlm + munge, starts the daemons, runs this, stops them

Skipped unless SLURM answers (`squeue`). A tiny config runs every stage as sbatch jobs (data
stages, a 20-step pretrain, evaluation, plots); then the outputs are checked and the pretrain
job's own SLURM record must show the GPU that profiles/slurm asks for.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from test_workflow import TINY, copy_workflow, write_yaml

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
    for rule in ("process_corpus", "shard_corpus", "tokenize_shard", "mask_shard", "inspect_dataset",
                 "train_run", "evaluate_run", "plot_runs"):
        assert f"rule {rule}:" in out, f"{rule} was not run"
        assert (wf / ".snakemake" / "slurm_logs" / f"rule_{rule}").is_dir(), f"{rule}: no sbatch log"
    assert "Job " in out and "has been submitted with SLURM jobid" in out


def test_outputs(lane):
    wf, _ = lane
    for f in ("results/pretrain/lane/final/model.safetensors", "results/pretrain/lane/final/metrics.jsonl",
              "results/evaluate/lane.json", "results/plots/summary.md", "results/plots/train_loss.png",
              "results/inspect/enwiki-sample-L128.json"):
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
