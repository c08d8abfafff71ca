"""Learning-rate schedules: linear warmup, then cosine to α·lr, linear to 0, or constant.

The original's optax schedule (REFERENCE.md §1) for pretraining; with kind "linear" it is also
Hugging Face's default linear schedule that run_glue uses (warmup 0 -> lr, then linearly to 0 at
the last step), so both loops share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class Schedule:
    peak: float  # the learning rate after warmup
    warmup: float  # steps of linear warmup from 0
    total: float  # the step at which the decay ends
    kind: str = "cosine"
    alpha: float = 0.1  # cosine: the final rate is alpha * peak

    def at(self, step: float) -> float:
        """Learning rate for optimizer update number `step` (0-based; a float when the position is a
        fraction of a time budget, bigs.train.budget)."""
        lr, w = self.peak, self.warmup
        if step < w:
            return lr * step / w
        t, T = step - w, max(self.total - w, 1)
        if self.kind == "cosine":
            return lr * ((1 - self.alpha) * 0.5 * (1 + math.cos(math.pi * min(t, T) / T)) + self.alpha)
        if self.kind == "linear":
            return lr * max(0.0, 1 - t / T)
        return lr


def set_lr(optimizer, lr: float) -> None:
    """The schedule's rate into every group, times the group's own multiplier (bigs.train.optim)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
