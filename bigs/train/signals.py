"""Stop requests: SIGTERM / SIGUSR1 (SLURM preemption) and a first Ctrl-C finish the step, write a
checkpoint and exit 3; a second Ctrl-C quits at once (the default action).

    with StopFlag() as stop:      # handlers installed; the previous ones come back on exit
        ...
        if stop.signal: ...       # the name of the signal that asked, or None

Install it before anything is written, so a signal during set-up is a clean stop too.

[xla] torch_xla.launch runs the loop in one thread per device of a process it forks: a flag
installed in the launching process before the fork is inherited by that process (its main thread
runs the handler, the device threads read the flag), and with `forward=True` the launcher passes
SIGTERM / SIGUSR1 on to it (a Ctrl-C reaches the whole process group by itself).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopFlag:
    """Set by a stop signal; the loops read it after each step (and agree on it across ranks)."""

    def __init__(self, forward: bool = False):
        self.signal: str | None = None
        self.forward = forward  # pass SIGTERM/SIGUSR1 on to this process's children (the XLA launcher)
        self._saved: dict = {}

    def _on_signal(self, signum, _frame) -> None:
        self.signal = signal.Signals(signum).name
        if self.forward and signum != signal.SIGINT:
            for child in multiprocessing.active_children():
                os.kill(child.pid, signum)
        if signum == signal.SIGINT:  # the next Ctrl-C takes the default action: quit at once
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            print(
                "\ninterrupted: finishing this step and writing a checkpoint (Ctrl-C again to quit at once)",
                file=sys.stderr,
            )

    def install(self) -> StopFlag:
        for sig in SIGNALS:
            self._saved[sig] = signal.signal(sig, self._on_signal)
        return self

    def restore(self) -> None:
        """Give back the handlers found at install (an in-process caller, e.g. gpu_check, keeps its own)."""
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()

    def __enter__(self) -> StopFlag:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
