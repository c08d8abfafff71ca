"""XLA lane: the same CLI with --device xla on torch-xla's CPU back-end (PJRT_DEVICE=CPU).

Needs torch-xla (a separate venv: torch 2.9.0 + torch-xla 2.9.0, see .ci/xla.sh); skipped
elsewhere. One device: a step compiles to a fixed set of graphs and the losses match CPU eager.
Several devices (CPU_NUM_DEVICES=2 and 4, one thread per device as on a TPU host; bigs/train/xla_cpu.py):
they train to the weights of one CPU process at the same global batch, every core stops after the
same step on SIGTERM and the rerun resumes to the uninterrupted weights, shards stream from gs://
(the GCS emulator, 4 cores) with each core reading its share, and the paper's TPU overlay runs through
Snakemake at tiny size.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch_xla")
from conftest import copy_workflow, make_shard, metrics, run_cli, smk, tiny_args, wait_for_step, write_yaml  # noqa: E402

pytestmark = pytest.mark.xla
COMMON = dict(steps=20, hidden_dropout_prob=0.0, save_steps=10, eval_steps=10)


def xla_env(n: int) -> dict:
    return {"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": str(n), "TF_CPP_MIN_LOG_LEVEL": "2"}


def run(args, env):
    return run_cli(args, env, timeout=1200)  # XLA compiles: slower than the CPU runs run_cli is sized for


def out_dir(args) -> Path:
    return Path(next(a.split("=", 1)[1] for a in args if a.startswith("--output_dir=")))


def max_dw(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max((x[k] - y[k]).abs().max().item() for k in x)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    for k in range(2):
        make_shard(d / f"train_shard_{k}.hdf5", 48, seed=k)
    make_shard(d / "test_shard_0.hdf5", 24, seed=9)
    return d


@pytest.fixture(scope="module")
def eager(data, tmp_path_factory):
    """One CPU process, global batch 8: what every XLA run must end at."""
    args = tiny_args(data, tmp_path_factory.mktemp("eager") / "cpu", device="cpu", **COMMON)
    run(args, {})
    return out_dir(args)


def test_xla_cpu_matches_eager_and_compiles_once(data, eager, tmp_path):
    args = tiny_args(data, tmp_path / "xla", device="xla", **COMMON)
    r = run(args, {"PJRT_DEVICE": "CPU"})
    assert "device xla × 1" in r.stdout
    xla, ref = metrics(out_dir(args)), metrics(eager)
    np.testing.assert_allclose([m["loss"] for m in xla], [m["loss"] for m in ref], atol=1e-3, rtol=0)
    compiles = [m["xla_compiles"] for m in xla]
    # warm-up: the first steps compile the step graph; afterwards the count must not grow
    # (eval at step 10 and checkpoints may add their own graphs once; compare steps 12..20)
    assert compiles[4] == compiles[8] and compiles[11] == compiles[-1], compiles
    assert abs(metrics(out_dir(args), "eval")[-1]["eval_loss"] - metrics(eager, "eval")[-1]["eval_loss"]) < 1e-3
    assert max_dw(out_dir(args) / "final", eager / "final") < 1e-3


@pytest.fixture(scope="module")
def two_cores(data, tmp_path_factory):
    """CPU_NUM_DEVICES=2 and nothing else: 2 devices, each its half of every global batch of 8."""
    args = tiny_args(
        data, tmp_path_factory.mktemp("xla2") / "run", device="xla", per_device_train_batch_size=4, **COMMON
    )
    return args, run(args, xla_env(2))


def assert_equals_one_process(args, r, eager, n):
    assert f"device xla × {n}; precision fp32; global batch 8 ({8 // n} × {n} devices" in r.stdout
    assert max_dw(out_dir(args) / "final", eager / "final") < 1e-3  # XLA vs eager numerics
    xla, ref = metrics(out_dir(args)), metrics(eager)
    np.testing.assert_allclose([m["loss"] for m in xla], [m["loss"] for m in ref], atol=1e-4, rtol=0)
    assert metrics(out_dir(args), "eval")[-1]["eval_tokens"] == metrics(eager, "eval")[-1]["eval_tokens"]
    compiles = [m["xla_compiles"] for m in xla]
    assert compiles[11] == compiles[-1], compiles  # no recompiles once warm (the collectives' ids included)


def test_two_devices_train_to_the_weights_of_one_process(two_cores, eager):
    assert_equals_one_process(*two_cores, eager, 2)


def test_sigterm_stops_every_core_after_the_same_step_and_the_rerun_resumes(data, two_cores, tmp_path):
    """Two devices, preempted mid-run: one checkpoint, exit 3; the same command again ends at the
    weights of the uninterrupted run (the batches the device loader had read ahead are not skipped)."""
    full, _ = two_cores
    cut = tiny_args(data, tmp_path / "cut", device="xla", per_device_train_batch_size=4, **COMMON)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigs.pretrain", *cut], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **xla_env(2)},
    )  # fmt: skip
    wait_for_step(out_dir(cut), 4, [proc], timeout=600, poll=0.1)
    proc.send_signal(signal.SIGTERM)  # to the launcher: it passes the signal on to its device process
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 3, stdout[-2000:] + stderr[-2000:]
    (ckpt,) = out_dir(cut).glob("checkpoint-*")  # before the first save step (10): the stop's own
    stopped = int(ckpt.name.split("-")[1])
    assert stopped < COMMON["save_steps"], stopped
    assert f"stopped by SIGTERM at step {stopped}" in stdout and metrics(out_dir(cut))[-1]["step"] == stopped
    assert len(json.loads((ckpt / "trainer_state.json").read_text())["rng"]) == 2  # both cores' RNG
    r = run(cut, xla_env(2))
    assert f"resumed from {ckpt}" in r.stdout
    assert max_dw(out_dir(cut) / "final", out_dir(full) / "final") < 1e-5


def test_gs_streaming_with_four_cores_reads_each_cores_share(data, eager, tmp_path, gcs_bucket):
    """Four devices (2 per global batch of 8), shards streamed from the GCS emulator: the weights of
    one CPU process reading the local copies, so each core read its own quarter."""
    from bigs.data import storage

    gcs_bucket("corpus")
    for f in sorted(data.iterdir()):
        storage.upload(f, f"gs://corpus/hdf5/{f.name}")
    args = tiny_args("gs://corpus/hdf5", tmp_path / "gcs", device="xla", per_device_train_batch_size=2, **COMMON)
    assert_equals_one_process(args, run(args, xla_env(4)), eager, 4)
    assert not list((out_dir(args) / ".shard-cache").glob("rank*/*.hdf5"))  # staged shards deleted


def test_the_paper_tpu_overlay_runs_through_snakemake_at_tiny_size(data, tmp_path, gcs_bucket, monkeypatch):
    """presets/paper-100k.yaml + presets/tpu.yaml (shards streamed from gs://, device xla) on two
    XLA:CPU devices, the model and steps shrunk by one more overlay."""
    from bigs.data import storage

    gcs_bucket("tpu")
    for f in sorted(data.iterdir()):
        storage.upload(f, f"gs://tpu/corpus/{f.name}")
    wf = copy_workflow(tmp_path / "wf")
    tiny = {
        "corpus": {"prebuilt": {"url": "gs://tpu/corpus"}},
        "pretrain": {"n_layers": 1, "hidden_size": 32, "intermediate_size": 48, "num_ssm": 8, "global_batch_size": 8,
                     "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8, "num_total_train_steps": 6,
                     "warmup_steps": 2, "logging_steps": 2, "eval_steps": 6, "save_steps": 6, "eval_batches": 2,
                     "precision": "fp32"},
        "evaluate": {"batch_size": 8, "max_batches": 2},
    }  # fmt: skip
    write_yaml(wf / "tiny-tpu.yaml", tiny)
    for k, v in xla_env(2).items():
        monkeypatch.setenv(k, v)
    out = smk(wf, "--cores", "2", "pretrain", "--configfile", "presets/paper-100k.yaml", "presets/tpu.yaml",
              "tiny-tpu.yaml").stdout  # fmt: skip
    log = (wf / "logs" / "train_run" / "BiGS_100k.log").read_text()
    assert "device xla × 2" in log and "global batch 8 (4 × 2 devices × 1 accumulation)" in log, out[-2000:]
    assert json.loads((wf / "results" / "evaluate" / "BiGS_100k.json").read_text())["metrics"]["eval_tokens"] > 0


def test_the_tpu_first_15_minutes_check_runs_on_two_xla_cpu_devices(tmp_path):
    """benchmarks/tpu_check.sh --smoke: install, devices, real steps (tokens/s per core), preemption + resume."""
    r = subprocess.run(
        ["bash", str(Path(__file__).parents[1] / "benchmarks" / "tpu_check.sh"), "--smoke", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "tpu_check.json").read_text())
    assert res["devices"]["count"] == 2 and res["devices"]["device_type"] == "CPU"
    assert res["steps"]["pass"] and res["steps"]["tokens_per_s_per_core"] > 0 and "× 2" in res["steps"]["summary"]
    assert res["resume"]["pass"] and res["resume"]["stop_exit"] == 3 and res["resume"]["finished"]
    assert "**PASS**" in (tmp_path / "tpu_check.md").read_text()
    assert "stopped by SIGTERM" in (tmp_path / "logs" / "preempted.log").read_text()  # every run's output kept
