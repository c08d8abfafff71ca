"""The output directory of a training run: writable, locked by its one live run, shared by every
node, and what to resume from — one policy for both loops.

Resume policy (`prepare_output_dir`):
  - resume "auto": the newest complete checkpoint, if `incompatible(ckpt)` has nothing against it;
    a PATH: that checkpoint; "never": none.
  - Checkpoints that are not resumed are never deleted: they move to previous-<time>/ (with
    metrics.jsonl and final/) when `overwrite` allows it (or they are incompatible), else the run
    stops with exit 2 saying how to continue or start over.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

from bigs.errors import BigsError, atomic_path
from bigs.train.checkpoint import complete_checkpoints
from bigs.train.runtime import Runtime


def lock_output_dir(out: Path, program: str):
    """Refuse a second live run in `out`: an advisory flock on out/.lock that the kernel drops when
    the holder dies (kill -9, node loss), so a requeued job is never blocked. Keep the returned
    file open for the run's life."""
    import fcntl
    import socket

    f = open(out / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise BigsError(
            f"{out}: --output_dir: in use by a running {program} ({holder}); wait for it, "
            "stop it, or choose another --output_dir"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


def make_writable_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}-{threading.get_ident()}"  # one per rank: they share the dir
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise BigsError(f"{out}: --output_dir: not writable ({exc.strerror or exc})") from exc


def choose_resume(ckpts: list[Path], *, resume: str, incompatible=None) -> tuple[Path | None, str | None]:
    """(checkpoint to resume or None, why the newest one is not resumed or None)."""
    if resume == "never" or (resume == "auto" and not ckpts):
        return None, None
    if resume != "auto":
        ckpt = Path(resume)
        if not (ckpt / "trainer_state.json").is_file():
            raise BigsError(f"{ckpt}: trainer_state.json: not a complete checkpoint (--resume)")
        return ckpt, None
    why = incompatible(ckpts[-1]) if incompatible else None
    return (None, why) if why else (ckpts[-1], None)


def prepare_output_dir(
    out: Path, rt: Runtime, *, resume: str = "auto", overwrite: bool = False, incompatible=None, program="bigs.pretrain"
):
    """Make `out`, check it is writable, not in use (rank 0 locks it) and shared by every node, and
    decide what to resume (module docstring). Returns (checkpoint or None, the lock file to keep open)."""
    from bigs.train import distributed

    make_writable_dir(out)
    lock = lock_output_dir(out, program) if rt.master else None
    if rt.world > 1:  # several processes or devices: output_dir must be one for all
        distributed.check_shared_output_dir(out, rt)
    ckpts = complete_checkpoints(out)
    resume_from, why = choose_resume(ckpts, resume=resume, incompatible=incompatible)
    if rt.world > 1:  # every rank resumes what rank 0 chose
        distributed.check_same_resume(resume_from, rt)
    if resume_from is None and ckpts and not (overwrite or why):
        raise BigsError(
            f"{out}: --output_dir holds {ckpts[-1].name}; use --resume auto to continue it, "
            "or --resume never --overwrite_output_dir to start over (old checkpoints are moved aside)"
        )
    if not rt.master:
        return resume_from, lock
    markers = sorted(out.glob("marker-*"))  # models a run kept along its time budget belong to that run
    if resume_from is None and (ckpts or markers):
        aside = move_aside(out, ckpts + markers)
        print(
            f"{out}: moved {len(ckpts)} old checkpoint(s), metrics and time-marker models to {aside} "
            f"({why or '--overwrite_output_dir'}); starting over"
        )
    if resume_from is None:  # nothing resumable: clear a previous attempt's leftovers
        (out / "metrics.jsonl").unlink(missing_ok=True)
    for tmp in out.glob(".tmp-*"):  # writes cut short by a kill (errors.atomic_*: checkpoints, final/, markers)
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    if resume_from is not None and overwrite:
        print(
            f"resuming from {resume_from} (--overwrite_output_dir never deletes a resumable run; "
            "use --resume never to start over)"
        )
    return resume_from, lock


def move_aside(out: Path, ckpts: list[Path]) -> Path:
    """previous-<time>/ gets `ckpts`, metrics.jsonl and final/ of an earlier run (never deleted)."""
    aside = out / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
    while aside.exists():  # two starts over within a second
        aside = aside.with_name(aside.name + "+")
    aside.mkdir()
    for d in ckpts + [out / "metrics.jsonl", out / "final"]:
        if d.exists():
            d.rename(aside / d.name)
    return aside


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint (they will be written again), and a last line
    cut short by a kill or a full disk."""
    if not path.exists():
        return

    def before(ln: str) -> bool:
        try:
            return json.loads(ln)["step"] <= step
        except (ValueError, KeyError, TypeError):
            return False

    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and before(ln)]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in keep))
