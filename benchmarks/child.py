"""A check's child process: its own process group, its output in a log, killed group and all at its
deadline (a TPU launcher or torchrun leaves grandchildren a plain kill would orphan).

    code, text = run([sys.executable, "-m", "bigs.pretrain", ...], log, timeout=300)   # code None: killed
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

CHILD: list = [None]  # the child running now: a hard stop (gpu_check.hard_stop) kills it


def start(cmd: list, log: Path, cwd=None) -> subprocess.Popen:
    with open(log, "w") as f:
        f.write(f"$ {' '.join(map(str, cmd))}\n")
        f.flush()
        CHILD[0] = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    return CHILD[0]


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> tuple[int | None, str]:
    """Wait up to `timeout` s, then kill the group; (exit code or None when killed, the log's text)."""
    try:
        code = proc.wait(timeout=max(timeout, 0))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    finally:
        CHILD[0] = None
    return code, log.read_text()


def run(cmd: list, log: Path, timeout: float, cwd=None) -> tuple[int | None, str]:
    return finish(start(cmd, log, cwd), log, timeout)
