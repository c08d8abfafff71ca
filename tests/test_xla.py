"""XLA lane: the same CLI with --device xla on torch-xla's CPU back-end (PJRT_DEVICE=CPU).

Needs torch-xla (a separate venv: torch 2.9.0 + torch-xla 2.9.0, see .ci/xla.sh); skipped
elsewhere. Checks that a step compiles to a fixed set of graphs (the count stops growing after
warm-up) and that the losses match CPU eager.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch_xla")
from conftest import make_shard, tiny_args  # noqa: E402

pytestmark = pytest.mark.xla


def run(args, env):
    r = subprocess.run(
        [sys.executable, "-m", "bigs.pretrain", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=1200,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [json.loads(ln) for ln in (args_dir(args) / "metrics.jsonl").read_text().splitlines()]


def args_dir(args):
    from pathlib import Path

    return Path(next(a.split("=", 1)[1] for a in args if a.startswith("--output_dir=")))


def test_xla_cpu_matches_eager_and_compiles_once(tmp_path):
    data = tmp_path / "data"
    for k in range(2):
        make_shard(data / f"train_shard_{k}.hdf5", 48, seed=k)
    make_shard(data / "test_shard_0.hdf5", 24, seed=9)
    common = dict(steps=20, hidden_dropout_prob=0.0, save_steps=10, eval_steps=10)
    eager = run(tiny_args(data, tmp_path / "cpu", device="cpu", **common), {})
    xla = run(tiny_args(data, tmp_path / "xla", device="xla", **common), {"PJRT_DEVICE": "CPU"})
    le = [m["loss"] for m in eager if m["kind"] == "train"]
    lx = [m["loss"] for m in xla if m["kind"] == "train"]
    assert len(lx) == 20
    np.testing.assert_allclose(lx, le, atol=1e-3, rtol=0)
    compiles = [m["xla_compiles"] for m in xla if m["kind"] == "train"]
    # warm-up: the first steps compile the step graph; afterwards the count must not grow
    # (eval at step 10 and checkpoints may add their own graphs once; compare steps 12..20)
    assert compiles[4] == compiles[8], compiles
    assert compiles[11] == compiles[-1], compiles
    ee = [m for m in eager if m["kind"] == "eval"][-1]
    ex = [m for m in xla if m["kind"] == "eval"][-1]
    assert abs(ee["eval_loss"] - ex["eval_loss"]) < 1e-3
    assert (tmp_path / "xla" / "final" / "model.safetensors").is_file()
