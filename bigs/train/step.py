"""The training step both loops run, and every benchmark times: forward and backward over the
micro-batches of one optimizer step, gradient clipping, the optimizer update.

    loss, grad_norm = train_step(run, micro, optimizer, rt=rt, weights=loss_weights(micro, rt))

`run` is the model as trained (compiled, DDP-wrapped); `loss` is this rank's share of the step's
loss (a device tensor: reading it is a host sync, left to the caller).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch

from bigs.errors import NonFiniteLoss
from bigs.train.checkpoint import complete_checkpoints
from bigs.train.runtime import Runtime, all_reduce_sum


def loss_weights(micro: list[dict], rt: Runtime) -> list:
    """Each micro-batch's share of the step's loss: its labelled tokens / all labelled tokens of the
    global batch, whatever the split over ranks, devices and accumulation steps (so several devices
    == one process at the same global batch). Counted on the host labels: no device sync."""
    if rt.kind == "xla":  # [xla] the labels are on the device: counted there and summed over cores in the graph
        import torch_xla.core.xla_model as xm

        counts = [(b["labels"] != -100).sum().float() for b in micro]
        total = torch.stack(counts).sum()
        if rt.world > 1:
            total = xm.all_reduce(xm.REDUCE_SUM, total)
        return [c / total.clamp(min=1.0) for c in counts]
    counts = [int((b["labels"] != -100).sum()) for b in micro]
    (total,) = all_reduce_sum([float(sum(counts))], rt)
    return [c / max(total, 1.0) for c in counts]


def train_step(
    run, micro: list[dict], optimizer, *, rt: Runtime, weights: list[float], max_grad_norm: float = 0.0, poison=False
):
    """One optimizer step over `micro` (host or device batches): Σ_i weights[i] · loss_i, backward,
    clip to max_grad_norm (0 = off), update, zero the gradients. Returns (loss, grad_norm) tensors.

    Several ranks or devices: gradients are averaged over them once per step ([ddp] no_sync on the
    other micro-batches; [xla] before clipping, so every core clips the same global gradient) and the
    loss is scaled by the world size, so the average is the global token-weighted sum.
    `poison` multiplies the loss by NaN (fault injection for tests).
    """
    loss_acc = torch.zeros((), device=rt.device)
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1
        with contextlib.nullcontext() if last or not rt.ddp else run.no_sync():  # [ddp] sync once per step
            with rt.autocast():
                loss = run(**rt.to_device(batch)).loss * weights[i]
            if poison:
                loss = loss * float("nan")
            (loss * rt.world).backward()
        loss_acc += loss.detach()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if rt.kind == "xla":  # [xla] all-reduce of gradients across cores (xm.optimizer_step's first half)
        import torch_xla.core.xla_model as xm

        xm.reduce_gradients(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_acc, grad_norm


def check_finite(loss: float, step: int, out: Path) -> None:
    """Stop before a NaN or inf reaches a checkpoint (exit 4), naming the step and the last good
    checkpoint in `out` (listed only then: this runs every step)."""
    if not math.isfinite(loss):
        last_good = (complete_checkpoints(out) or [None])[-1]
        raise NonFiniteLoss(
            f"non-finite loss ({loss}) at step {step}; last good checkpoint: {last_good or 'none'} — "
            "lower the learning rate (or set --max_grad_norm) and rerun: it resumes from there"
        )
