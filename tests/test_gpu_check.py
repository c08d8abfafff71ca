"""The one-shot GPU check (benchmarks/gpu_check.sh) in --smoke mode: the same code at
tiny sizes on this machine's device, ≈1 min on 2 CPU cores. Run once per module; the tests read its
JSON and markdown."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ["parity", "step", "long_sequence", "training", "projection"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    r = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable},
    )
    return r, out


@pytest.fixture(scope="module")
def result(smoke):
    return json.loads((smoke[1] / "gpu_check.json").read_text())


def test_exits_0_and_writes_the_five_sections(smoke, result):
    r, _ = smoke
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert list(result) == SECTIONS
    assert not any("error" in result[k] for k in SECTIONS)


def test_training_loss_fell_and_the_run_resumed(result):
    tr = result["training"]
    assert tr["boolean"]["last_loss"] < tr["boolean"]["first_loss"]
    assert tr["checks"]["loss_fell"]["pass"] and tr["checks"]["resumed"]["pass"]
    assert (
        tr["boolean"]["resumed"].startswith("resumed from")
        and f"checkpoint-{tr['resume_at']}" in tr["boolean"]["resumed"]
    )
    assert tr["faster_gather"] in ("boolean", "positions")


def test_numbers_are_finite_and_positive(result):
    timed = [r for r in result["step"]["runs"] + result["long_sequence"]["runs"] if "skipped" not in r]
    assert {(r["model"], r["gather"]) for r in result["step"]["runs"]} >= {("BiGS", "boolean"), ("BiGS", "positions")}
    assert {r["conv"] for r in result["step"]["runs"] if r["model"] == "BiGS"} >= {"toeplitz", "fft"}
    values = [r[k] for r in timed for k in ("tokens_per_s", "ms_per_step")]
    values += [result["training"][g]["tokens_per_s"] for g in ("boolean", "positions")]
    values += [row[k] for row in result["projection"]["rows"] for k in ("tokens_per_s", "hours_1_gpu", "hours_8_gpus")]
    assert len(values) > 10 and all(math.isfinite(v) and v > 0 for v in values)
    for name, c in result["parity"].items():
        if isinstance(c, dict) and "measured" in c:
            assert math.isfinite(c["measured"]) and c["pass"], name


def test_markdown_names_every_section(smoke):
    r, out = smoke
    md = (out / "gpu_check.md").read_text()
    for key in SECTIONS:
        assert f"## {key}" in md
    assert "PASS" in md and md.strip() in r.stdout  # also printed at the end
