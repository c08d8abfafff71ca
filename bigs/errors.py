"""One error type for bad input, the exit codes every CLI shares, and atomic writes so a killed job
leaves nothing half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Exit codes of every bigs command (the training loops use all of them; README "Exit codes").
EXIT_BAD_INPUT = 2  # bad input (one line naming the file and field) or a busy output_dir
EXIT_PREEMPTED = 3  # stopped by SIGTERM/SIGUSR1 or a first Ctrl-C after writing a checkpoint: rerun resumes
EXIT_NONFINITE = 4  # non-finite loss: the message names the step and the last good checkpoint
EXIT_PEER_LOST = 5  # a peer rank or node died or hung past --dist_timeout: rerun on every node resumes


class BigsError(Exception):
    """A user-facing error: the message names the file and the field, and says what to do."""

    exit_code = EXIT_BAD_INPUT


class NonFiniteLoss(BigsError):
    """The loss became NaN or inf: training stops rather than write a poisoned checkpoint."""

    exit_code = EXIT_NONFINITE


def fail(path, field: str, what: str) -> BigsError:
    """Build the standard message `<path>: <field>: <what>`."""
    return BigsError(f"{path}: {field}: {what}")


def first_line(exc: BaseException, width: int = 200) -> str:
    """An exception's first line (a library's multi-line message quoted in ours), else its type."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:width]


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = ""):
    """Yield a temp path next to `final`; rename it onto `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp (and writers that replace the file) make it 0600
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike):
    """Yield a temp directory next to `final`; swap it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}.", dir=final.parent))
    try:
        yield tmp
        follow_umask(tmp)
        if final.exists():
            old = final.with_name(f".old-{final.name}.{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_files(dest: str | os.PathLike, last: tuple[str, ...] = ("model.safetensors",)):
    """Yield a temp directory inside `dest`; on success move each file written there into `dest`
    (whole files only, each renamed), the names in `last` after the others: a reader that sees
    them sees the rest. For outputs that share a directory with other files (run_glue's layout)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-files.", dir=dest))
    try:
        yield tmp
        follow_umask(tmp)
        for f in sorted(tmp.iterdir(), key=lambda f: f.name in last):
            os.replace(f, dest / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def follow_umask(root: Path) -> None:
    """Give `root` and everything under it the modes open()/mkdir() would give: mkdtemp makes 0700
    and safetensors writes 0600, which would hide a model from the group on a shared cluster."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for d, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(d, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(d, name), 0o666 & ~mask)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cli_main(main, output_flag: str = "file") -> None:
    """Run a CLI `main()` the way every bigs command enters: a BigsError, or a local filesystem error
    (unwritable dir, full disk, path under a file; charged to `output_flag`), becomes one line on
    stderr and its exit code (2; 4 for a non-finite loss)."""
    try:
        sys.exit(main() or 0)
    except BigsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.filename is None:  # not a path problem (network, ...): keep the traceback
            raise
        what = f"{exc.strerror or exc} — check the path is a writable directory with free space"
        print(f"error: {fail(exc.filename, output_flag, what)}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
