"""Every benchmark runs: `python benchmarks/bench_*.py --smoke` (tiny sizes, seconds each) exits 0 and
prints its figures. The figures themselves are for people to read, not for tests to time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("bench_*.py")))
def test_benchmark_runs_with_smoke(script, tmp_path):
    work = ["--work", str(tmp_path)] if "--work" in (BENCH / script).read_text() else []
    r = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", *work],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"\d[\d,.]* ?(tokens/s|ms|s|MB|ex/s|h)\b", r.stdout), r.stdout[-2000:]
