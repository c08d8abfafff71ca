"""Where a training process runs: device choice, precision, seeding and the process group.

Every entry point that runs a model (bigs.pretrain, bigs.finetune, bigs.evaluate, the benchmarks)
picks its device here, so "auto", TF32 and bf16 autocast mean the same everywhere. Device
back-ends differ in the lines marked `# [cuda]`, `# [ddp]`, `# [xla]`.

TF32 (decided once, here): on CUDA, fp32 matmuls and cuDNN convolutions take TF32 inputs (10-bit
mantissa, fp32 accumulation; torch's recommendation for training, ~8x the fp32 rate on Ampere and
later). Under bf16 autocast the dense layers run in bf16 anyway; what TF32 touches is the SSM
convolution, which bigs.model.ssm_conv always runs outside autocast in fp32 storage: its Toeplitz
GEMM (L <= 1024) takes TF32 inputs, its FFT path (longer L) is true fp32. A TF32 rounding of the
convolution's inputs (~5e-4 relative) is far below bf16's (~4e-3) everywhere else in the step.
Weights, optimizer state and the loss stay fp32. benchmarks/gpu_check.py measures the difference
(TF32 vs fp32 logits and convolution) and turns TF32 off where it checks fp32 math.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from bigs.errors import BigsError

TF32 = True  # see the module docstring


@dataclass
class Runtime:
    """This process: device kind, device, rank, world size, and bf16 autocast on or off."""

    kind: str  # "cpu" | "cuda" | "xla"
    device: torch.device
    rank: int = 0
    world: int = 1
    bf16: bool = False

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def ddp(self) -> bool:  # [ddp] several processes joined by torch.distributed (XLA has its own collectives)
        return self.world > 1 and self.kind != "xla"

    def autocast(self):
        """bf16 autocast (bf16 matmuls and convolutions, fp32 weights, optimizer and loss) or nothing."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.kind, dtype=torch.bfloat16)

    def to_device(self, batch: dict) -> dict:
        """A host batch on this device ([xla]: the device loader has already moved it)."""
        if self.kind == "xla":
            return batch
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}


def device_kind(flag: str, allowed=("cpu", "cuda", "xla")) -> str:
    """--device auto|cpu|cuda|xla -> the kind to use; cuda requested but unusable is an error naming torch's reason."""
    if flag not in ("auto", *allowed):
        raise BigsError(f"--device: {flag!r} is not one of auto, {', '.join(allowed)}")
    if flag == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if flag == "cuda" and not torch.cuda.is_available():  # [cuda]
        raise BigsError(f"--device: cuda requested but torch cannot use a GPU ({cuda_unavailable_reason()})")
    return flag


def cuda_unavailable_reason() -> str:
    """Why torch.cuda cannot be used: a CPU build, no device, or torch's own error from initialising CUDA
    (e.g. a driver older than the wheel's CUDA)."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build; install a CUDA build of torch"
    try:
        torch.cuda.init()
    except Exception as exc:  # noqa: BLE001 — torch's reason is the message
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}): {type(exc).__name__}: {exc}".strip()
    if torch.cuda.device_count() == 0:
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU (CUDA_VISIBLE_DEVICES?)"
    return "available"


def setup(device: str = "auto", *, bf16: bool | None = None, dist_timeout: float | None = None) -> Runtime:
    """Pick the device, join the process group when launched by torchrun ([ddp], given a dist_timeout)
    or the XLA world ([xla]). bf16 None = on for CUDA only (run_glue's habit), else as given."""
    kind = device_kind(device)
    if kind == "xla":  # [xla]
        import torch_xla
        import torch_xla.runtime as xr

        return Runtime(kind, torch_xla.device(), xr.global_ordinal(), xr.world_size(), bool(bf16))
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    dev = torch.device("cpu")
    if kind == "cuda":  # [cuda]
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = TF32
        torch.backends.cudnn.allow_tf32 = TF32
    rt = Runtime(kind, dev, rank, world, kind == "cuda" if bf16 is None else bf16)
    if world > 1 and dist_timeout is not None:  # [ddp]
        init_process_group(rt, dist_timeout)
    return rt


def init_process_group(rt: Runtime, timeout_s: float) -> None:
    """gloo on CPU, NCCL on CUDA, every collective bounded by `timeout_s` so a lost peer becomes an
    error in this process (bigs.train.distributed turns it into exit 5) instead of a hang.

    [cuda] NCCL only raises in the waiting thread with blocking wait; otherwise its watchdog aborts
    the process (SIGABRT) after the timeout and the lost-peer message is never printed. Async error
    handling is turned off for the same reason (when both are set, torch lets it take precedence).
    `device_id` binds the communicator to this rank's GPU at init (no guess, no lazy init hang).
    """
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    if rt.kind == "cuda":
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0")
        dist.init_process_group("nccl", timeout=timeout, device_id=rt.device)
    else:
        dist.init_process_group("gloo", timeout=timeout)


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (every device) from one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- host values across ranks
# The one seam between the loop and the collectives: torch.distributed for several processes
# ([ddp]), torch-xla's host rendezvous for several XLA devices ([xla]; each call is a host round
# trip, so the loop agrees on XLA at log steps only); identity on one device.


def all_reduce_sum(values: list[float], rt: Runtime) -> list[float]:
    """Σ over ranks of a few host numbers."""
    if rt.world == 1:
        return values
    if rt.kind == "xla":  # [xla]
        import torch_xla.core.xla_model as xm

        return xm.mesh_reduce("bigs.sum", list(values), lambda vs: [float(sum(x)) for x in zip(*vs)])
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj, rt: Runtime) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if rt.world == 1:
        return [obj]
    if rt.kind == "xla":  # [xla]
        import torch_xla.core.xla_model as xm

        return list(xm.mesh_reduce("bigs.gather", obj, list))
    import torch.distributed as dist

    out = [None] * rt.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, rt: Runtime):
    """Rank 0's `obj` on every rank."""
    return gather_objects(obj if rt.master else None, rt)[0]


def barrier(rt: Runtime) -> None:
    if rt.world == 1:
        return
    if rt.kind == "xla":  # [xla]
        import torch_xla.core.xla_model as xm

        xm.rendezvous("bigs.barrier")
        return
    import torch.distributed as dist

    dist.barrier()
