"""What a run reports: metrics.jsonl (+ TensorBoard), the loss/speed window between log lines,
the progress bar, and model-FLOPs utilisation."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

# Dense bf16 peak FLOP/s of accelerators we know (for MFU); TF32 ≈ half.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "V100": 125e12}


class MetricsLog:
    """metrics.jsonl, one JSON object per line (and TensorBoard events with tensorboard=True),
    written by rank 0 only (master=False: a no-op)."""

    def __init__(self, out: Path, *, tensorboard: bool = False, master: bool = True):
        self.f = open(Path(out) / "metrics.jsonl", "a") if master else None
        self.tb = None
        if tensorboard and master:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(out) / "tb"))
            except ImportError:
                print(
                    "warning: --tensorboard: tensorboard is not installed; writing metrics.jsonl only", file=sys.stderr
                )

    def __call__(self, record: dict) -> None:
        if self.f is None:
            return
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "kind"):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def close(self) -> None:
        for h in (self.f, self.tb):
            if h is not None:
                h.close()


class Window:
    """The steps since the last log line: their number, wall time and mean loss (of those whose
    loss was read: [xla] reads it at log steps only)."""

    def __init__(self):
        self.start, self.steps, self.loss_sum, self.losses = time.time(), 0, 0.0, 0

    def add(self, loss: float | None) -> None:
        self.steps += 1
        if loss is not None:
            self.loss_sum, self.losses = self.loss_sum + loss, self.losses + 1

    def close(self) -> tuple[float, float, int]:
        """(mean loss, seconds, steps) of the window, and start the next one."""
        out = self.loss_sum / max(self.losses, 1), time.time() - self.start, self.steps
        self.__init__()
        return out

    def restart_clock(self) -> None:
        """Leave time spent outside training (an evaluation) out of the next speed figure."""
        self.start = time.time()


def progress_bar(total: int, *, initial: int, desc: str, enabled: bool = True):
    """tqdm on rank 0 (sparse updates when stderr is a log file), None elsewhere."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0
    )


def peak_flops(device: torch.device, bf16: bool) -> float | None:
    """Dense peak FLOP/s of known accelerators (for MFU); None where unknown (CPU)."""
    if device.type != "cuda":  # [cuda]
        return None
    name = torch.cuda.get_device_name(device)
    for key, f in PEAK_FLOPS.items():
        if key in name:
            return f if bf16 else f / 2  # TF32 ≈ half the bf16 rate
    return None


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token (fwd + bwd = 3 × fwd), the head at ≈15 % of the positions; each model
    counts its own (bigs/model.py, bigs/bert.py)."""
    return float(model.flops_per_token(seq_len, mlm_fraction=0.15))


def human_time(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else (f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s")
