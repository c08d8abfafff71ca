"""The one-shot GPU check (benchmarks/gpu_check.sh) in --smoke mode: the same code at
tiny sizes on this machine's device, ≈1 min on 2 CPU cores. Run once per module; the tests read its
JSON and markdown."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ["parity", "step", "long_sequence", "training", "projection"]
sys.path.insert(0, str(REPO / "benchmarks"))  # gpu_check's helpers, for the unit tests below

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
    assert list(result) == ["preflight", *SECTIONS]
    assert not any("error" in result[k] for k in SECTIONS)
    assert result["training"]["checks"]["tied_decoder_stored_once"]["pass"]
    assert result["training"]["bf16_vs_fp32_loss"]["pass"]


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


# ----------------------------------------------------------------------------- without a GPU, budget, hard stop
def test_without_a_usable_gpu_the_full_check_stops_at_once_with_torchs_reason(tmp_path):
    """This machine's torch is a CPU build: the full check says so (and what nvidia-smi says) within seconds."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is usable here")
    t = time.time()
    r = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert r.returncode == 3 and time.time() - t < 60, r.stderr
    pre = json.loads((tmp_path / "gpu_check.json").read_text())["preflight"]
    assert pre["cuda"] in r.stderr and pre["nvidia_smi"] in r.stderr
    assert ("CPU build" in pre["cuda"]) == (torch.version.cuda is None)


def test_budget_skips_what_would_not_fit_and_never_passes_the_run_end():
    import gpu_check

    now = [1000.0]
    b = gpu_check.Budget(100, run_end=1050, clock=lambda: now[0])
    assert b.left() == 50  # capped by the end of the whole run
    assert b.skip(40) is None and "needs ~60 s, 50 s left" in b.skip(60)
    now[0] = 1049
    assert b.skip(5) is not None and b.left() == 1


def test_training_plan_counts_start_ups_writes_and_sync_counts():
    import gpu_check

    plan = gpu_check.FULL
    fit = gpu_check.fit_training(plan, step_s=0.1, left=1000, writes=(9.0, 3.0), sync_s=40)
    fixed = 3 * gpu_check.CLI_START_S + 3 * 9.0 + 3 * 3.0 + 40
    assert fit["need_s"] == pytest.approx(fixed + (300 + 100) * 0.1 * 1.2) and "shortened" not in fit
    short = gpu_check.fit_training(plan, step_s=0.1, left=170, writes=(9.0, 3.0), sync_s=40)
    assert "shortened" in short and short["resume_at"] < short["steps"] < 300
    assert fixed + (short["steps"] + short["positions_steps"]) * 0.1 * 1.2 <= 170


def test_a_child_past_its_budget_is_killed_and_its_output_kept(tmp_path):
    import gpu_check

    b = gpu_check.Budget(6, run_end=time.time() + 6)
    t = time.time()
    code, text = gpu_check.run_child(
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"], tmp_path / "c.log", b
    )
    assert code is None and "started" in text and "started" in (tmp_path / "c.log").read_text()
    assert time.time() - t < 20


def test_the_hard_stop_kills_the_child_and_writes_what_was_measured(tmp_path):
    script = f"""
import subprocess, sys, time, json
sys.path.insert(0, {str(REPO / "benchmarks")!r})
import gpu_check
res = {{"parity": {{"measured": 1}}}}
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
gpu_check.child.CHILD[0] = child
open({str(tmp_path / "child.pid")!r}, "w").write(str(child.pid))
gpu_check.hard_stop(time.time() + 2, res, lambda: open({str(tmp_path / "out.json")!r}, "w").write(json.dumps(res)))
time.sleep(60)
"""
    t = time.time()
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and time.time() - t < 30, r.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["parity"] == {"measured": 1} and "hard_stop" in out
    pid = int((tmp_path / "child.pid").read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
