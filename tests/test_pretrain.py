"""bigs.pretrain: schedule, flags, golden losses, exact resume, preemption, DDP, faults.

Runs the real CLI in subprocesses on a tiny BiGS (H 32, 2 layers) over small synthetic shards
whose tokens are arithmetic progressions (learnable from both neighbours).
"""

from __future__ import annotations

import json
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import logged, metrics, run_cli, tiny_args, wait_for_step, wait_until, weights_hash

from bigs.errors import BigsError
from bigs.pretrain import accumulation_steps, eval_cost_fraction, is_paper_recipe, mlm_gather, parse_args, schedule
from bigs.train.optim import param_groups

GOLDEN = Path(__file__).parent / "golden" / "pretrain_tiny_losses.json"
SEED_GPU_COMMAND = """--output_dir=BiGS_100k/ --dataset_path=PATH_OF_YOUR_TRAIN_CORPUS/ --model_type=s4-bert
--max_seq_length=128 --weight_decay=0.05 --per_device_train_batch_size=131 --per_device_eval_batch_size=131
--learning_rate=6e-4 --overwrite_output_dir --max_train_shards=3000 --adam_beta1=0.9 --adam_beta2=0.98
--logging_steps=100 --save_steps=5000 --eval_steps=8000 --n_layers=23 --warmup_steps=2000
--num_total_train_steps=100000 --hidden_dropout_prob=0.1 --hidden_size=1024 --intermediate_size=3072
--schedule_type=cosine"""


# ----------------------------------------------------------------------------- pure helpers
def test_lr_schedule_matches_closed_form():
    a = parse_args(
        [
            "--output_dir=o",
            "--dataset_path=d",
            "--learning_rate=1e-3",
            "--warmup_steps=100",
            "--num_total_train_steps=1100",
        ]
    )
    assert schedule(a).at(0) == 0.0
    assert schedule(a).at(50) == pytest.approx(5e-4)
    assert schedule(a).at(100) == pytest.approx(1e-3)  # cosine at t = 0
    assert schedule(a).at(600) == pytest.approx(1e-3 * (0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)) + 0.1))  # = 5.5e-4
    assert schedule(a).at(1100) == pytest.approx(1e-4)  # alpha * lr at the end
    a.schedule_type = "linear"
    assert schedule(a).at(600) == pytest.approx(5e-4) and schedule(a).at(1100) == 0.0
    a.schedule_type = "constant"
    assert schedule(a).at(600) == pytest.approx(1e-3) and schedule(a).at(10) == pytest.approx(1e-4)


def test_seed_command_parses_with_original_meaning():
    a = parse_args(shlex.split(SEED_GPU_COMMAND))
    assert (a.model_type, a.max_seq_length, a.per_device_train_batch_size, a.n_layers) == ("s4-bert", 128, 131, 23)
    assert (a.learning_rate, a.weight_decay, a.adam_beta2, a.adam_epsilon) == (6e-4, 0.05, 0.98, 1e-6)
    assert (a.warmup_steps, a.num_total_train_steps, a.schedule_type, a.cosine_schedule_alpha) == (
        2000,
        100000,
        "cosine",
        0.1,
    )
    assert a.overwrite_output_dir and a.precision == "fp32" and a.max_grad_norm == 0.0 and a.resume == "auto"


@pytest.mark.parametrize(
    "flag", ["--save_steps=0", "--eval_steps=0", "--per_device_train_batch_size=0", "--num_total_train_steps=-5"]
)
def test_zero_or_negative_steps_rejected(flag, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--output_dir=o", "--dataset_path=d", flag])
    assert flag.split("=")[0] in capsys.readouterr().err


def test_sequence_length_comes_from_the_shards(shards, tmp_path):
    """Without --max_seq_length the model takes the shards' length (the workflow passes none for a
    downloaded corpus); a given one is checked against every shard (test_shards_longer_than_the_model...)."""
    assert parse_args(["--output_dir=o", "--dataset_path=d"]).max_seq_length is None
    args = [
        a
        for a in tiny_args(shards, tmp_path / "run", steps=2, eval_steps=2, warmup_steps=1)
        if not a.startswith("--max_seq_length")
    ]
    run_cli(args)
    assert json.loads((tmp_path / "run" / "final" / "config.json").read_text())["max_position_embeddings"] == 32


def test_auto_gather_is_the_fixed_shape_one_wherever_shapes_must_not_depend_on_the_data():
    """XLA and torch.compile (the boolean mask splits the graph in three, with dynamic shapes) and CUDA
    (two host syncs per micro-batch) take the positions gather; CPU eager the boolean mask."""
    a = parse_args(["--output_dir=o", "--dataset_path=d"])
    assert [mlm_gather(a, k) for k in ("cpu", "cuda", "xla")] == ["boolean", "positions", "positions"]
    a.compile = True
    assert mlm_gather(a, "cpu") == "positions"
    a.mlm_gather = "boolean"
    assert mlm_gather(a, "cuda") == "boolean"  # an explicit choice stands


def test_no_decay_on_biases_and_layernorm():
    from bigs.model import BiGSConfig, BiGSForMaskedLM

    m = BiGSForMaskedLM(BiGSConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, intermediate_size=37))
    groups = param_groups(m, 0.05, verbose=False)
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.05 for p in g["params"]}
    for name, p in m.named_parameters():
        assert (id(p) in decayed) == (not (name.endswith("bias") or "LayerNorm" in name)), name
    assert any(id(p) in decayed for n, p in m.named_parameters() if n.endswith("fs4.kernel.A_re"))  # as the original


# ----------------------------------------------------------------------------- runs
def test_tiny_run_loss_falls_and_matches_golden(shards, tmp_path):
    out = tmp_path / "run"
    r = run_cli(tiny_args(shards, out, hidden_dropout_prob=0.0))
    assert "global batch 8" in r.stdout and "token positions per step" in r.stdout
    assert "MLM head gather boolean (auto)" in r.stdout
    train = metrics(out)
    losses = [m["loss"] for m in train]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0, losses
    assert {"step", "tokens_seen", "wall_time", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "mfu"} <= train[
        0
    ].keys()
    evals = metrics(out, "eval")
    assert [e["step"] for e in evals] == [15, 30] and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "vocab.txt").is_file()
    if os.environ.get("BIGS_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"torch": torch.__version__, "losses": losses[:10]}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    np.testing.assert_allclose(losses[:10], golden["losses"], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def reference_run(shards, tmp_path_factory) -> Path:
    """An uninterrupted 40-step run: what every interrupted-and-resumed run must end equal to."""
    ref = tmp_path_factory.mktemp("ref") / "run"
    run_cli(tiny_args(shards, ref, steps=40))
    return ref


def test_kill9_at_random_step_then_resume_is_bit_identical(shards, tmp_path, reference_run):
    ref = reference_run
    out = tmp_path / "killed"
    seed = int(os.environ.get("BIGS_TEST_SEED", "20261202"))  # replay a failure: BIGS_TEST_SEED=<seed in the message>
    kill_at = random.Random(seed).randint(12, 35)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigs.pretrain", *tiny_args(shards, out, steps=40)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_step(out, kill_at, [proc], what=f"the kill at step {kill_at} (BIGS_TEST_SEED={seed})", poll=0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "final").exists()
    r = run_cli(tiny_args(shards, out, steps=40))
    assert "resumed from" in r.stdout
    assert weights_hash(out / "final") == weights_hash(ref / "final"), (
        f"killed at step {kill_at} (BIGS_TEST_SEED={seed})"
    )
    steps = [m["step"] for m in metrics(out)]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # no duplicated log lines after resume


def test_sigterm_checkpoints_and_exits_3_then_resumes(shards, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigs.pretrain", *tiny_args(shards, out, steps=2000, save_steps=1000)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_step(out, 3, [proc])
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, stdout
    ckpts = sorted(out.glob("checkpoint-*"))
    assert len(ckpts) == 1 and "stopped by SIGTERM" in stdout
    state = json.loads((ckpts[0] / "trainer_state.json").read_text())
    assert state["step"] == int(ckpts[0].name.split("-")[1]) >= 3
    r = run_cli(tiny_args(shards, out, steps=state["step"] + 5, save_steps=1000))
    assert f"resumed from {ckpts[0]}" in r.stdout and (out / "final").is_dir()


def test_sigusr1_is_preemption_too(shards, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigs.pretrain", *tiny_args(shards, out, steps=2000, save_steps=1000)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_step(out, 1, [proc])
    proc.send_signal(signal.SIGUSR1)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "stopped by SIGUSR1" in stdout


def test_kill9_during_checkpoint_write_keeps_previous(shards, tmp_path, reference_run):
    out = tmp_path / "run"
    env = {"BIGS_FAULT_CHECKPOINT_DELAY": "30"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigs.pretrain", *tiny_args(shards, out, steps=40)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # first checkpoint (step 10) sleeps 30 s before its rename: kill it there
    wait_until(lambda: list(out.glob(".tmp-checkpoint-10*")), [proc], what="checkpoint-10 being written")
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(out.glob(".tmp-checkpoint-10*")) and not (out / "checkpoint-10").exists()
    r = run_cli(tiny_args(shards, out, steps=40))
    assert "resumed from" not in r.stdout  # the half-written checkpoint is never loaded
    assert not list(out.glob(".tmp-checkpoint-*"))  # and its leftovers are removed
    assert weights_hash(out / "final") == weights_hash(reference_run / "final")


def test_nan_loss_stops_with_step_and_last_good_checkpoint(shards, tmp_path):
    out = tmp_path / "run"
    r = run_cli(tiny_args(shards, out, steps=40), env={"BIGS_FAULT_NAN_AT_STEP": "14"}, check=False)
    assert r.returncode == 4
    assert "non-finite loss" in r.stderr and "at step 15" in r.stderr and "checkpoint-10" in r.stderr
    assert (out / "checkpoint-10" / "trainer_state.json").is_file() and not (out / "checkpoint-20").exists()
    from safetensors.torch import load_file

    saved = load_file(str(out / "checkpoint-10" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())  # the last good checkpoint holds no NaN


def test_existing_run_is_never_destroyed_silently(shards, tmp_path):
    out = tmp_path / "run"
    run_cli(tiny_args(shards, out, steps=10))
    r = run_cli(tiny_args(shards, out, steps=10) + ["--resume=never"], check=False)
    assert r.returncode == 2 and "--overwrite_output_dir" in r.stderr and "checkpoint-10" in r.stderr
    r = run_cli(tiny_args(shards, out, steps=10) + ["--resume=never", "--overwrite_output_dir"])
    aside = list(out.glob("previous-*"))
    assert len(aside) == 1 and (aside[0] / "checkpoint-10").is_dir() and "moved 1 old checkpoint" in r.stdout
    # --overwrite_output_dir with the default --resume auto continues, and says so
    r = run_cli(tiny_args(shards, out, steps=12) + ["--overwrite_output_dir"])
    assert "never deletes a resumable run" in r.stdout


def test_missing_shards_fail_fast_with_the_command_to_run(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli(tiny_args(tmp_path / "empty", tmp_path / "out"), check=False)
    assert r.returncode == 2 and "no train shards" in r.stderr and "bigs.data.samples" in r.stderr


def test_checkpoint_of_another_size_is_refused(shards, tmp_path):
    out = tmp_path / "run"
    run_cli(tiny_args(shards, out, steps=10))
    r = run_cli(tiny_args(shards, out, steps=12, hidden_size=48), check=False)
    assert r.returncode == 2 and "checkpoint-10" in r.stderr and "hidden_size" in r.stderr


TORCHRUN_2 = (
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc_per_node=2",
    "-m",
    "bigs.pretrain",
)


def test_ddp_two_gloo_processes_equal_one_process(shards, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = dict(steps=12, hidden_dropout_prob=0.0, eval_steps=12)
    run_cli(tiny_args(shards, one, **common))
    r = run_cli(
        tiny_args(shards, two, per_device_train_batch_size=2, global_batch_size=8, **common),
        env={"OMP_NUM_THREADS": "1"},
        launcher=TORCHRUN_2,
    )
    assert "global batch 8 (2 × 2 devices × 2 accumulation)" in r.stdout
    l1, l2 = [m["loss"] for m in metrics(one)], [m["loss"] for m in metrics(two)]
    np.testing.assert_allclose(l2, l1, rtol=0, atol=1e-5)
    e1, e2 = metrics(one, "eval")[-1], metrics(two, "eval")[-1]
    assert e1["eval_tokens"] == e2["eval_tokens"] and abs(e1["eval_loss"] - e2["eval_loss"]) < 1e-5


def test_a_rank_with_no_evaluation_batch_does_not_hang_the_others(shards, tmp_path):
    """A test split of one batch: rank 1's share is empty. It adds zeros to the sums over ranks
    instead of stopping (the other rank would wait in the all-reduce until --dist_timeout)."""
    import shutil

    from conftest import make_shard

    data = tmp_path / "data"
    data.mkdir()
    for f in shards.glob("train_*"):
        shutil.copy(f, data / f.name)
    make_shard(data / "test_shard_0.hdf5", 8, seed=99)  # one batch of 8
    one, two = tmp_path / "one", tmp_path / "two"
    common = dict(steps=4, warmup_steps=2, hidden_dropout_prob=0.0, eval_steps=4, per_device_eval_batch_size=8)
    run_cli(tiny_args(data, one, **common))
    run_cli(
        tiny_args(data, two, per_device_train_batch_size=4, **common) + ["--dist_timeout=60"],
        env={"OMP_NUM_THREADS": "1"},
        launcher=TORCHRUN_2,
    )
    e1, e2 = metrics(one, "eval")[-1], metrics(two, "eval")[-1]
    assert e1["eval_batches"] == e2["eval_batches"] == 1 and e1["eval_tokens"] == e2["eval_tokens"]
    assert abs(e1["eval_loss"] - e2["eval_loss"]) < 1e-5


def test_gradient_accumulation_equals_big_batch(shards, tmp_path):
    one, acc = tmp_path / "one", tmp_path / "acc"
    run_cli(tiny_args(shards, one, steps=8, hidden_dropout_prob=0.0))
    run_cli(
        tiny_args(
            shards, acc, steps=8, hidden_dropout_prob=0.0, per_device_train_batch_size=4, gradient_accumulation_steps=2
        )
    )
    np.testing.assert_allclose([m["loss"] for m in metrics(acc)], [m["loss"] for m in metrics(one)], atol=1e-5)
    derived = tmp_path / "derived"  # the same through --global_batch_size
    r = run_cli(
        tiny_args(shards, derived, steps=8, hidden_dropout_prob=0.0, per_device_train_batch_size=4, global_batch_size=8)
    )
    assert "global batch 8 (4 × 1 devices × 2 accumulation)" in r.stdout
    assert [m["loss"] for m in metrics(derived)] == [m["loss"] for m in metrics(acc)]


def test_global_batch_derives_accumulation_for_any_world_size():
    a = parse_args(shlex.split(SEED_GPU_COMMAND) + ["--global_batch_size=1048"])
    assert [accumulation_steps(a, w) for w in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(BigsError, match=r"--global_batch_size: 1048 is not a multiple of .* 131 × 3 devices = 393"):
        accumulation_steps(a, 3)
    a.gradient_accumulation_steps = 8
    assert accumulation_steps(a, 1) == 8  # explicit and equal: fine
    with pytest.raises(BigsError, match="--gradient_accumulation_steps: 8 conflicts with --global_batch_size 1048"):
        accumulation_steps(a, 2)
    a.global_batch_size, a.gradient_accumulation_steps = None, None
    assert accumulation_steps(a, 8) == 1  # without it: today's meaning, per-device × world × accumulation


def test_a_bad_global_batch_fails_before_anything_is_written(shards, tmp_path):
    r = run_cli(tiny_args(shards, tmp_path / "run", global_batch_size=12), check=False)
    assert r.returncode == 2 and "--global_batch_size: 12" in r.stderr and not (tmp_path / "run").exists()


def test_paper_recipe_is_recognised_and_its_evaluation_budget_is_small():
    """The paper presets' eval_batches (200 per device) keep 13 evaluations under 2 % of training."""
    a = parse_args(shlex.split(SEED_GPU_COMMAND) + ["--global_batch_size=1048", "--eval_batches=200"])
    assert is_paper_recipe(a) and not is_paper_recipe(
        parse_args(["--output_dir=o", "--dataset_path=d", "--n_layers=2"])
    )
    # 100000 // 8000 = 12 evaluations + the final one; a forward is a third of forward + backward
    assert eval_cost_fraction(a, 1048, world=1) == pytest.approx(13 * 200 * 131 / (3 * 100_000 * 1048))  # 0.11 %
    assert eval_cost_fraction(a, 1048, world=8) == pytest.approx(8 * 13 * 200 * 131 / (3 * 100_000 * 1048))  # 0.87 %
    assert eval_cost_fraction(a, 1048, world=8) < 0.02
    a.eval_batches = 0
    assert eval_cost_fraction(a, 1048, world=1) is None  # the whole test split: unbounded


def test_max_train_shards_counts_shard_visits_as_the_original(shards, tmp_path):
    """3 shards of 40/47/54 instances = 5/5/6 batches of 8; 4 visits = one epoch + the first shard of
    the next epoch's seeded order; training stops there, before --num_total_train_steps."""
    from bigs.data.stream import TrainStream

    sizes = {f"train_shard_{k}.hdf5": 40 + 7 * k for k in range(3)}
    stream = TrainStream(sorted(str(p) for p in shards.glob("train_*")), per_device=8, seed=7)
    visited = [stream.shards[i] for i in stream._order(0)] + [stream.shards[stream._order(1)[0]]]
    expected = sum(sizes[Path(p).name] // 8 for p in visited)
    out = tmp_path / "run"
    r = run_cli(tiny_args(shards, out, steps=1000, max_train_shards=4, eval_steps=1000, save_steps=1000))
    assert metrics(out)[-1]["step"] == expected and "4 shard visits done at step" in r.stdout
    assert json.loads((out / "final" / "trainer_state.json").read_text())["step"] == expected


def test_a_saved_data_position_is_the_same_point_for_another_split_of_the_global_batch(shards):
    """Saved by 2 devices × 4 (offset counts micro-batches of 8), resumed on 1 device × 4 with 2
    accumulation steps: the regrouped position yields exactly the samples the old run would have seen
    next; a point inside a micro-batch of the new split is refused naming the file and field."""
    from bigs.data.stream import TrainStream

    paths = sorted(str(p) for p in shards.glob("train_*"))
    streams = [TrainStream(paths, per_device=4, rank=r, world=2, seed=7) for r in range(2)]
    old = [iter(s) for s in streams]
    for _ in range(3):
        [next(s) for s in old]
    position = streams[0].position()
    assert position[2] == 3
    expected = torch.cat([next(s)["input_ids"] for s in old])  # the next global micro-batch of 8

    new_position = TrainStream.regroup(position, 8, 4, "run/trainer_state.json")
    assert new_position == (position[0], position[1], 6)
    new = iter(TrainStream(paths, per_device=4, seed=7, accumulation=2, position=new_position))
    assert torch.equal(torch.cat([next(new)["input_ids"] for _ in range(2)]), expected)

    with pytest.raises(BigsError, match=r"run/trainer_state.json: data_position: 24 samples .* of 16"):
        TrainStream.regroup(position, 8, 16, "run/trainer_state.json")


def test_adafactor_trains_without_weight_decay(shards, tmp_path):
    out = tmp_path / "run"
    run_cli(
        tiny_args(shards, out, steps=10, adafactor="true", learning_rate=0.3, hidden_dropout_prob=0.0)
    )  # relative steps: lr × rms(p)
    losses = [m["loss"] for m in metrics(out)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    state = torch.load(out / "checkpoint-10" / "optimizer.pt", weights_only=True)
    # optax factors only when both of the two largest dims are >= 128: at H 32 nothing is (HF's would)
    assert set().union(*(s.keys() for s in state["state"].values())) == {"step", "v"}


def test_busy_output_dir_is_refused_and_a_dead_holder_never_blocks(shards, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "bigs.pretrain", *tiny_args(shards, out, steps=5000, save_steps=5000)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_step(out, 1, [first])
        t = time.time()
        r = run_cli(tiny_args(shards, out, steps=5), check=False)
        assert r.returncode == 2 and "in use by a running bigs.pretrain" in r.stderr and f"pid {first.pid}" in r.stderr
        assert time.time() - t < 30 and first.poll() is None
    finally:
        first.kill()  # kill -9: the kernel drops the lock with the process
        first.wait()
    r = run_cli(tiny_args(shards, out, steps=5))
    assert "done: 5 steps" in r.stdout


def test_ctrl_c_checkpoints_once_and_quits_at_once_the_second_time(shards, tmp_path):
    out = tmp_path / "run"

    def start(env=None):
        return subprocess.Popen(
            [sys.executable, "-m", "bigs.pretrain", *tiny_args(shards, out, steps=5000, save_steps=5000)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    proc = start()
    wait_for_step(out, 3, [proc])
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "stopped by SIGINT" in stdout and "Traceback" not in stderr
    (ckpt,) = out.glob("checkpoint-*")
    proc = start({"BIGS_FAULT_CHECKPOINT_DELAY": "60"})  # resumes; its checkpoint write will hang
    wait_for_step(out, int(ckpt.name.split("-")[1]) + 2, [proc])
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: list(out.glob(".tmp-checkpoint-*")), [proc], what="the checkpoint being written")
    proc.send_signal(signal.SIGINT)  # the impatient second Ctrl-C: quit now, not after the write
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGINT and "Traceback" not in stderr and "Ctrl-C again" in stderr
    assert list(out.glob("checkpoint-*")) == [ckpt]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_file_follows_the_umask(shards, tmp_path, umask):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "bigs.pretrain", *tiny_args(shards, out, steps=10, save_steps=5)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(umask),
    )
    assert r.returncode == 0, r.stderr
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    assert (
        modes["final/model.safetensors"] == 0o666 & ~umask
        and modes["checkpoint-10/rng-rank0.safetensors"] == 0o666 & ~umask
    )
    wrong = {k: oct(m) for k, m in modes.items() if m != (0o777 if (out / k).is_dir() else 0o666) & ~umask}
    assert not wrong


def test_bert_baseline_trains_on_the_same_data(shards, tmp_path):
    out = tmp_path / "bert"
    run_cli(tiny_args(shards, out, steps=10, model_type="bert", eval_steps=10))
    cfg = json.loads((out / "final" / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["hidden_size"] == 32
    assert metrics(out, "eval")[-1]["eval_tokens"] > 0


def test_gcs_streaming_trains_like_local(shards, tmp_path, gcs_bucket):
    from bigs.data import storage

    gcs_bucket("corpus")
    for f in sorted(shards.iterdir()):
        storage.upload(f, f"gs://corpus/hdf5/{f.name}")
    local, remote = tmp_path / "local", tmp_path / "remote"
    run_cli(tiny_args(shards, local, steps=12, eval_steps=6))
    run_cli(tiny_args("gs://corpus/hdf5", remote, steps=12, eval_steps=6))
    assert [m["loss"] for m in metrics(remote)] == [m["loss"] for m in metrics(local)]
    assert metrics(remote, "eval")[-1]["eval_loss"] == metrics(local, "eval")[-1]["eval_loss"]
    assert not (remote / ".shard-cache" / "rank0").exists()  # staged shards are deleted


@pytest.fixture
def small_fs(tmp_path):
    """A size-limited tmpfs the test can fill (needs root and mount; skipped elsewhere)."""
    mounts = []

    def make(size: str, readonly: bool = False) -> Path:
        d = tmp_path / f"fs{len(mounts)}"
        d.mkdir()
        opts = f"size={size}" + (",ro" if readonly else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounts.append(d)
        return d

    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_full_disk_while_checkpointing_keeps_previous(shards, tmp_path, small_fs):
    # one checkpoint of the tiny model is ≈12 MB (weights + two Adam moments): 20 MB holds one
    fs = small_fs("20m")
    out = fs / "run"
    r = run_cli(tiny_args(shards, out, steps=30, save_total_limit=0), check=False)
    assert r.returncode == 2, r.stderr
    assert "checkpoint-20: checkpoint: write failed" in r.stderr and "checkpoint-10 is intact" in r.stderr
    assert (out / "checkpoint-10" / "trainer_state.json").is_file()
    assert not (out / "checkpoint-20").exists() and not list(out.glob(".tmp-*"))
    weights_hash(out / "checkpoint-10")  # still readable


def test_unwritable_output_dir(shards, small_fs):
    ro = small_fs("1m", readonly=True)
    r = run_cli(tiny_args(shards, ro / "run"), check=False)
    assert r.returncode == 2 and "--output_dir: not writable" in r.stderr and str(ro / "run") in r.stderr


def test_checkpoints_are_never_unpickled():
    """Security: every torch.load in the package passes weights_only=True (a checkpoint must never run code)."""
    import re

    pkg = Path(__file__).parents[1] / "bigs"
    for f in pkg.rglob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", f.read_text()):
            assert "weights_only=True" in call, f"{f}: {call}"


def test_shards_longer_than_the_model_are_refused(tmp_path):
    from conftest import make_shard

    data = tmp_path / "data"
    data.mkdir()
    make_shard(data / "train_shard_0.hdf5", 16, seed=0)  # L 32
    make_shard(data / "test_shard_0.hdf5", 8, L=16, seed=1)
    r = run_cli(tiny_args(data, tmp_path / "run", max_seq_length=16), check=False)
    assert r.returncode == 2 and "train_shard_" in r.stderr and "input_ids: sequences of length 32" in r.stderr
    assert "--max_seq_length is 16" in r.stderr


def test_test_shards_longer_than_the_model_are_refused_at_start_up(tmp_path):
    """Train shards at L 16 and test shards at L 32: exit 2 naming the test shard before any step
    (not at the first evaluation); bigs.evaluate refuses them the same way."""
    from conftest import make_shard

    data = tmp_path / "data"
    data.mkdir()
    make_shard(data / "train_shard_0.hdf5", 16, L=16, seed=0)
    make_shard(data / "test_shard_0.hdf5", 8, seed=1)
    r = run_cli(tiny_args(data, tmp_path / "run", max_seq_length=16), check=False)
    assert (
        r.returncode == 2
        and "test_shard_0.hdf5: input_ids: sequences of length 32, longer than the model's 16" in r.stderr
    )
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_bert_masked_head_equals_full_head():
    """The baseline's masked-only head gives BertForMaskedLM's loss and gradients."""
    from transformers import BertConfig, BertForMaskedLM

    from bigs.bert import BertForMaskedLMMaskedHead

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    fast, full = BertForMaskedLMMaskedHead(cfg), BertForMaskedLM(cfg)
    full.load_state_dict(fast.state_dict())
    ids = torch.randint(5, 99, (3, 13))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[1, 7], labels[2, 12] = 7, 8, 9, 10
    lf, lr = fast(input_ids=ids, labels=labels).loss, full(input_ids=ids, labels=labels).loss
    lf.backward()
    lr.backward()
    torch.testing.assert_close(lf, lr)
    grads = {n: p.grad for n, p in full.named_parameters() if p.grad is not None}
    assert len(grads) > 20
    for n, p in fast.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], msg=n, atol=1e-6, rtol=1e-5)
    pos = torch.tensor([[2, 0], [5, 7], [12, 0]])
    fixed = fast(input_ids=ids, labels=torch.tensor([[7, -100], [8, 9], [10, -100]]), masked_positions=pos).loss
    torch.testing.assert_close(fixed, lr)


def test_batch_bigger_than_every_shard_is_an_error_not_a_hang(shards, tmp_path):
    r = run_cli(tiny_args(shards, tmp_path / "run", per_device_train_batch_size=64), check=False)
    assert r.returncode == 2 and "fewer instances than one global batch (64" in r.stderr


# ----------------------------------------------------------------------------- time budget (academic-budget-bert)
def test_a_time_budget_ends_the_run_decayed_survives_preemption_and_keeps_markers(shards, tmp_path):
    """--total_training_time 0.004 h (14.4 s): the schedule runs over the budget, the run ends by time
    (checkpoint, final/, exit 0) decayed to α·lr, a preemption midway neither resets nor repeats the
    clock, and models are kept at 0.25 and 0.5 of it."""
    out = tmp_path / "run"
    args = tiny_args(
        shards, out, steps=100_000, warmup_steps=100, logging_steps=10, save_steps=100_000, eval_steps=100_000
    ) + ["--total_training_time=0.004", "--finetune_time_markers=0.25,0.5"]
    proc = subprocess.Popen([sys.executable, "-m", "bigs.pretrain", *args], stdout=subprocess.PIPE, text=True)
    wait_until(lambda: any(r["wall_time"] > 5 for r in logged(out)), [proc], what="5 s of training")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 3
    (ckpt,) = out.glob("checkpoint-*")
    spent = json.loads((ckpt / "trainer_state.json").read_text())["elapsed_s"]
    assert 5 < spent < 14.4
    r = run_cli(args)
    assert f"resumed from {ckpt}" in r.stdout and "--total_training_time 0.004 h spent at step" in r.stdout
    final = json.loads((out / "final" / "trainer_state.json").read_text())
    assert 14.4 <= final["elapsed_s"] < 14.4 + 5  # the time before the preemption counted once
    train = metrics(out)
    peak = 3e-3
    assert train[-1]["lr"] < 0.15 * peak and train[-1]["step"] == final["step"]  # decayed to ≈ α·lr = 0.1·lr
    before, after = (
        [m["lr"] for m in train if m["step"] <= ckpt_step(ckpt)],
        [m["lr"] for m in train if m["step"] > ckpt_step(ckpt)],
    )
    assert after[0] <= before[-1]  # the resumed run continues the schedule, it does not restart it
    assert metrics(out, "eval")[-1]["step"] == final["step"]  # the end of the run is evaluated
    for m in (0.25, 0.5):
        st = json.loads((out / f"marker-{m:g}" / "trainer_state.json").read_text())
        assert st["reached"] and m * 0.004 <= st["hours"] < m * 0.004 + 0.0005, st
        assert (out / f"marker-{m:g}" / "model.safetensors").is_file()


def test_markers_a_run_does_not_reach_hold_the_final_model(shards, tmp_path):
    out = tmp_path / "run"
    r = run_cli(tiny_args(shards, out, steps=10) + ["--total_training_time=1", "--finetune_time_markers=0.5"])
    st = json.loads((out / "marker-0.5" / "trainer_state.json").read_text())
    assert not st["reached"] and st["step"] == 10 and "time marker 0.5 not reached" in r.stderr
    assert weights_hash(out / "marker-0.5") == weights_hash(out / "final")


def test_budget_flags_need_a_budget():
    with pytest.raises(BigsError, match="--finetune_time_markers: needs --total_training_time"):
        parse_args(["--output_dir=o", "--dataset_path=d", "--finetune_time_markers=0.5"])
    with pytest.raises(SystemExit):
        parse_args(["--output_dir=o", "--dataset_path=d", "--total_training_time=1", "--finetune_time_markers=1.5"])


def ckpt_step(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[1])
