"""Several nodes, for real: two torchrun agents on this machine act as two nodes (one process each,
gloo on 127.0.0.1), as a user would start them on two hosts.

- static (--master_addr) and c10d (--rdzv_endpoint) rendezvous train to the weights of one
  process at the same global batch;
- a node killed mid-run: the survivor exits 5 with one line naming the lost peer, within
  --dist_timeout (a hung node) or at once (a dead one), never hangs; rerunning both resumes from
  the last complete checkpoint and ends at the uninterrupted run's weights;
- no shared file system (each "node" given its own output_dir): refused at start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port, metrics, tiny_args, wait_for_step

pytestmark = pytest.mark.slow

COMMON = dict(steps=20, save_steps=10, eval_steps=20, hidden_dropout_prob=0.0)
# Fault runs: a constant lr makes a long run (killed mid-way) and a 30-step run the same up to step
# 30, so the resumed run must end at the weights of an uninterrupted 30-step one-process run.
FAULT = dict(COMMON, steps=30, schedule_type="constant", warmup_steps=0, eval_steps=30)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(node_rank: int | None, port: int, rdzv: str = "static") -> list[str]:
    """The command a user types on node `node_rank` of 2 (one process per node)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--max-restarts=0"]
    if rdzv == "static":
        cmd += [f"--node_rank={node_rank}", "--master_addr=127.0.0.1", f"--master_port={port}"]
    else:  # c10d: the agents agree on ranks themselves; the first to bind the endpoint hosts the store
        cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=bigs-test"]
    return cmd + ["-m", "bigs.pretrain"]


def start_nodes(args_per_node: list[list[str]], rdzv="static", logs: Path | None = None) -> list[subprocess.Popen]:
    port = free_port()
    procs = []
    for node, args in enumerate(args_per_node):
        out = open(logs / f"node{node}.log", "w") if logs else subprocess.PIPE
        procs.append(
            subprocess.Popen(
                torchrun(node, port, rdzv) + args, stdout=out, stderr=subprocess.STDOUT, text=True, env=ENV
            )
        )
    return procs


def descendants(pid: int) -> list[int]:
    """pid and every process below it (torchrun starts its workers in their own sessions, so a
    "node" is the agent plus its workers, not one process group)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += [c for c, pp in parent.items() if pp == p]
    return found


def signal_node(proc: subprocess.Popen, sig) -> None:
    for pid in descendants(proc.pid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_all(procs, timeout=120) -> list[int]:
    deadline = time.time() + timeout
    try:
        return [p.wait(max(1, deadline - time.time())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                signal_node(p, signal.SIGKILL)
                p.wait()


def one_process(shards, out, settings=COMMON):
    r = subprocess.run(
        [sys.executable, "-m", "bigs.pretrain", *tiny_args(shards, out, **settings)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]


def max_abs_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    """One process, global batch 8."""
    out = tmp_path_factory.mktemp("one") / "run"
    one_process(shards, out)
    return out


@pytest.fixture(scope="module")
def fault_reference(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one-fault") / "run"
    one_process(shards, out, FAULT)
    return out


def two_node_args(shards, out, settings=COMMON, **over):
    """2 nodes × 1 process × per-device 2 × accumulation 2 = global batch 8."""
    return tiny_args(
        shards,
        out,
        **{"per_device_train_batch_size": 2, "global_batch_size": 8, "dist_timeout": 20, **settings, **over},
    )


@pytest.mark.parametrize("rdzv", ["static", "c10d"])
def test_two_nodes_train_to_the_one_process_weights(shards, reference, tmp_path, rdzv):
    out = tmp_path / "run"
    procs = start_nodes([two_node_args(shards, out)] * 2, rdzv, logs=tmp_path)
    codes = wait_all(procs)
    log0 = (tmp_path / "node0.log").read_text() + (tmp_path / "node1.log").read_text()
    assert codes == [0, 0], log0[-4000:]
    assert "global batch 8 (2 × 2 devices × 2 accumulation)" in log0
    diff = max_abs_diff(out / "final", reference / "final")
    print(f"{rdzv}: max |ΔW| two nodes vs one process = {diff:.2e}")
    assert diff < 1e-5
    np.testing.assert_allclose([m["loss"] for m in metrics(out)], [m["loss"] for m in metrics(reference)], atol=1e-5)


@pytest.mark.parametrize("fault", ["kill", "hang"])
def test_a_lost_node_stops_the_other_with_one_line_then_both_resume(shards, fault_reference, tmp_path, fault):
    """kill: node 1 dies (kill -9 of its agent and worker) -> node 0 stops at once. hang: node 1 is
    frozen (SIGSTOP, as a partitioned host) -> node 0 stops within --dist_timeout (8 s) + a few."""
    out = tmp_path / "run"
    args = two_node_args(shards, out, FAULT, steps=2000, dist_timeout=8)  # long: the fault lands mid-run
    procs = start_nodes([args] * 2, logs=tmp_path)
    try:
        wait_for_step(out, 12, procs)  # checkpoint-10 is complete
        signal_node(procs[1], signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        t0 = time.time()
        code0 = procs[0].wait(60)
        took = time.time() - t0
    finally:
        for p in procs:
            signal_node(p, signal.SIGKILL)  # also a SIGSTOPped node's orphans
            p.wait()
    log0 = (tmp_path / "node0.log").read_text()
    assert code0 != 0 and took < (8 + 20 if fault == "hang" else 20), (code0, took, log0[-3000:])
    print(f"{fault}: node 0 exited {code0} after {took:.1f} s")
    errors = [ln for ln in log0.replace("\r", "\n").splitlines() if ln.startswith("error: rank 0 of 2")]
    assert len(errors) == 1, log0[-3000:]
    assert "a peer rank" in errors[0] and "rerun the same command on every node" in errors[0]
    assert ("hung past --dist_timeout" if fault == "hang" else "closed its connection") in errors[0], errors[0]
    assert "Traceback" not in log0.split(errors[0])[0][-2000:]  # the worker's own output: no traceback
    assert "exitcode  : 5" in log0  # torchrun's summary names the worker's exit code
    # rerun both nodes with the real step count: resumes from the newest complete checkpoint
    last = max(int(d.name.split("-")[1]) for d in out.glob("checkpoint-*") if (d / "trainer_state.json").exists())
    (tmp_path / "rerun").mkdir()
    procs = start_nodes([two_node_args(shards, out, FAULT)] * 2, logs=tmp_path / "rerun")
    assert wait_all(procs) == [0, 0], (tmp_path / "rerun" / "node0.log").read_text()[-3000:]
    assert f"resumed from {out / f'checkpoint-{last}'}" in (tmp_path / "rerun" / "node0.log").read_text()
    assert max_abs_diff(out / "final", fault_reference / "final") < 1e-5


def test_without_a_shared_output_dir_the_run_is_refused(shards, tmp_path):
    """Each node given its own directory = two nodes whose output_dir is not on a shared FS."""
    procs = start_nodes(
        [two_node_args(shards, tmp_path / "node0-local"), two_node_args(shards, tmp_path / "node1-local")],
        logs=tmp_path,
    )
    codes = wait_all(procs, timeout=60)
    log = (tmp_path / "node0.log").read_text() + (tmp_path / "node1.log").read_text()
    assert codes[0] != 0 and codes[1] != 0
    assert "rank 1 on" in log and "cannot see the file rank 0" in log and "shared file system" in log, log[-3000:]
    assert not list((tmp_path / "node0-local").glob("checkpoint-*"))


def test_preemption_of_every_node_checkpoints_once_exits_3_and_resumes(shards, fault_reference, tmp_path):
    """SLURM preemption signals every process of every node (SIGTERM to torchrun agents and
    workers): the workers agree to stop after the same step, rank 0 writes one checkpoint and the
    workers exit 3; the rerun resumes there and ends at the uninterrupted run's weights."""
    out = tmp_path / "run"
    procs = start_nodes([two_node_args(shards, out, FAULT, steps=2000, save_steps=1000)] * 2, logs=tmp_path)
    try:
        wait_for_step(out, 7, procs)
        for p in procs:
            signal_node(p, signal.SIGTERM)
        codes = [p.wait(60) for p in procs]
    finally:
        for p in procs:
            signal_node(p, signal.SIGKILL)
            p.wait()
    log0 = (tmp_path / "node0.log").read_text()
    ckpts = sorted(out.glob("checkpoint-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "trainer_state.json").exists(), log0[-3000:]
    assert f"stopped by SIGTERM at step {ckpts[0].name.split('-')[1]}" in log0 and "exit 3" in log0
    # torchrun itself got SIGTERM: it waits for its worker (≤ 30 s), then exits 1 (SignalException),
    # not the worker's 3; SLURM requeues a preempted job whatever its exit code.
    assert all(c != 0 for c in codes), codes
    (tmp_path / "rerun").mkdir()
    procs = start_nodes([two_node_args(shards, out, FAULT)] * 2, logs=tmp_path / "rerun")
    assert wait_all(procs) == [0, 0], (tmp_path / "rerun" / "node0.log").read_text()[-3000:]
    assert max_abs_diff(out / "final", fault_reference / "final") < 1e-5


def test_slurm_launcher_starts_one_torchrun_per_node(tmp_path):
    """scripts/pretrain.sh in a 2-node SLURM job (stand-in scontrol; BIGS_LAUNCH_DRY_RUN prints the
    srun line instead of running it): srun one task per node, c10d on the first node's NodeAddr."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "scontrol").write_text(
        "#!/bin/sh\n"
        'case "$1 $2" in\n'
        '  "show job") echo "JobId=$3 JobName=x ReqNodeList=(null) ExcNodeList=(null) NodeList=gpu[07-08] NumNodes=2 NumCPUs=64" ;;\n'
        '  "show hostnames") printf "gpu07\\ngpu08\\n" ;;\n'
        '  "show node") echo "NodeName=$3 Arch=x86_64 CoresPerSocket=32 NodeAddr=10.1.0.7 NodeHostName=$3 State=ALLOCATED" ;;\n'
        "esac\n"
    )
    (bindir / "scontrol").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "SLURM_JOB_NUM_NODES": "1",  # the plugin's step
        "SLURM_JOB_ID": "4242",
        "BIGS_LAUNCH_DRY_RUN": "1",
    }
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        ["bash", str(repo / "scripts" / "pretrain.sh"), str(tmp_path / "out"), "abc", "8", "32", "--seed=7"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("pretrain.sh: srun"))
    assert line == (
        "pretrain.sh: srun --jobid=4242 --overlap --kill-on-bad-exit=1 --nodes=2 --ntasks=2 --ntasks-per-node=1 "
        "--cpus-per-task=32 --gpus-per-node=8 python -m torch.distributed.run --nnodes=2 --nproc_per_node=8 "
        "--max-restarts=0 --rdzv_backend=c10d --rdzv_endpoint=10.1.0.7:24242 --rdzv_id=slurm-4242 "
        "-m bigs.pretrain --seed=7 --resume never"
    )
