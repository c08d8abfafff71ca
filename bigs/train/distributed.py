"""Several processes and nodes: the checks a multi-node run needs at start-up, and a lost peer as
one line and exit 5 instead of a traceback or a hang.

The contract (README "Several nodes"): output_dir is on a file system every node mounts at the
same path; rank 0 alone writes checkpoints, metrics and final/ and holds the lock; every rank reads
the checkpoint rank 0 chose at resume. Both are checked at start-up.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

import torch.distributed as dist

from bigs.errors import EXIT_PEER_LOST, BigsError
from bigs.train.checkpoint import complete_checkpoints
from bigs.train.runtime import Runtime, barrier, broadcast_object, gather_objects

# What a collective says when another rank died (connection closed) or hung past the timeout:
# gloo's messages, and NCCL's under blocking wait (ProcessGroupNCCL: "Work ... timed out in blocking
# wait", the watchdog's "collective operation timeout", "NCCL error ... remote process exited",
# "NCCL communicator was aborted").
LOST_PEER_MARKERS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Timed out",
    "timed out",
    "Socket Timeout",
    "operation timeout",
    "Broken pipe",
    "connection refused",
    "Connection refused",
    "NCCL communicator was aborted",
    "remote process exited",
    "ncclRemoteError",
    "ncclSystemError",
)


def check_shared_output_dir(out: Path, rt: Runtime) -> None:
    """Rank 0 writes a nonce file in `out`; every rank must see it, or the run stops at once
    (without a shared file system each node would resume from its own, different checkpoints)."""
    import uuid

    nonce = broadcast_object(uuid.uuid4().hex, rt)
    probe = out / f".shared-fs-{nonce}"
    if rt.master:
        probe.write_text(nonce)
    barrier(rt)
    seen = probe.is_file() and probe.read_text() == nonce
    views = gather_objects((rt.rank, socket.gethostname(), seen), rt)
    barrier(rt)  # everyone looked before rank 0 removes it
    if rt.master:
        probe.unlink(missing_ok=True)
    blind = [f"rank {r} on {host}" for r, host, ok in views if not ok]
    if blind:
        raise BigsError(
            f"{out}: --output_dir: {', '.join(blind)} cannot see the file rank 0 ({views[0][1]}) wrote there; "
            "a multi-node run needs output_dir on a shared file system (NFS, Lustre, GPFS…) mounted at the "
            "same path on every node: rank 0 writes the checkpoints and every rank reads them at resume"
        )


def check_same_resume(resume_from: Path | None, rt: Runtime) -> None:
    """Every rank must resume from the checkpoint rank 0 chose (a stale NFS listing would not)."""
    chosen = gather_objects(str(resume_from), rt)
    if len(set(chosen)) > 1:
        raise BigsError(
            f"{resume_from}: --resume: ranks disagree on the checkpoint to resume "
            f"({', '.join(f'rank {r}: {c}' for r, c in enumerate(chosen))}); is output_dir shared by every node?"
        )


def lost_peer_message(exc: BaseException, output_dir: str | None) -> str | None:
    """One line for a collective that failed because another rank died or hung past --dist_timeout;
    None for any other error (those keep their traceback)."""
    text = str(exc)
    if not isinstance(exc, (dist.DistError, RuntimeError)) or not any(m in text for m in LOST_PEER_MARKERS):
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    peer = re.search(r"\[([0-9a-fA-F.:]+)\]:(\d+)", text)
    where = f" (peer {peer.group(1)}:{peer.group(2)})" if peer else ""
    hung = any(m in text for m in ("imed out", "Timeout", "timeout"))
    why = "hung past --dist_timeout" if hung else "closed its connection (died)"
    last = complete_checkpoints(output_dir) if output_dir is not None else []
    detail = re.sub(r"^\[[^\]]*\] ", "", text.splitlines()[0]).split(". ")[0][:160]  # drop gloo's source location
    return (
        f"rank {dist.get_rank()} of {dist.get_world_size()} on {socket.gethostname()}: a peer rank{where} {why}: "
        f"a node or process of this run is gone; rerun the same command on every node to resume from "
        f"{last[-1] if last else 'the start (no checkpoint yet)'} ({type(exc).__name__}: {detail})"
    )


def reporting_lost_peers(main, argv, *, output_dir) -> int:
    """main(argv), but a failed collective after a peer's death is one line and exit 5, not a
    traceback (output_dir(): where the checkpoints are, asked only then). os._exit: the process
    group's threads would otherwise keep a dead peer's socket waiting."""
    try:
        return main(argv)
    except (RuntimeError, dist.DistError) as exc:
        msg = lost_peer_message(exc, output_dir())
        if msg is None:
            raise
        sys.stdout.flush()
        print(f"\nerror: {msg}", file=sys.stderr, flush=True)  # \n: after the progress bar
        os._exit(EXIT_PEER_LOST)
