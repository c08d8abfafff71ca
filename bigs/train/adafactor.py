"""`optax.adafactor` with its defaults, in PyTorch: what the original's `--adafactor` runs (REFERENCE.md §5e).

    optimizer = OptaxAdafactor(param_groups, lr=6e-4)   # lr per group, set by the trainer every step

optax.adafactor(learning_rate) = chain(scale_by_factored_rms(decay_rate 0.8, eps 1e-30,
min_dim_size_to_factor 128), clip_by_block_rms(1.0), scale(lr), scale_by_param_block_rms(1e-3),
scale(-1)); no momentum, no weight decay. Per parameter, with t = 0, 1, ... the update count:

    beta_t = 1 - (t + 1)^-0.8                      (0 at the first update: v starts as g²)
    g2     = g² + 1e-30
    factored (the two largest dims both >= 128; d0 = largest, d1 = second largest):
        r = beta_t r + (1 - beta_t) mean_{d0}(g2)    c = beta_t c + (1 - beta_t) mean_{d1}(g2)
        u = g / sqrt(c ⊗ r / mean(r))
    else:  v = beta_t v + (1 - beta_t) g2,   u = g / sqrt(v)
    u = u / max(1, rms(u) / 1.0)                   (per-parameter clip)
    p = p - lr · max(rms(p), 1e-3) · u             (parameter scale, from p before the update)

Differences from transformers' Adafactor, which is why this exists: HF factors every matrix (optax
only when both dims are >= 128) and applies the group's weight decay.
"""

from __future__ import annotations

import torch

MIN_DIM_SIZE_TO_FACTOR = 128
DECAY_RATE = 0.8
EPS = 1e-30
CLIP_THRESHOLD = 1.0
PARAM_SCALE_EPS = 1e-3


def factored_dims(shape) -> tuple[int, int] | None:
    """(d1, d0): the second-largest and the largest dim, or None if not factored (optax `_factored_dims`)."""
    if len(shape) < 2:
        return None
    order = sorted(range(len(shape)), key=lambda d: shape[d])  # stable, as numpy's argsort on ties here
    if shape[order[-2]] < MIN_DIM_SIZE_TO_FACTOR:
        return None
    return order[-2], order[-1]


def rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean().sqrt()


class OptaxAdafactor(torch.optim.Optimizer):
    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.float()
                state = self.state[p]
                dims = factored_dims(p.shape)
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    if dims is None:
                        state["v"] = torch.zeros_like(g)
                    else:
                        d1, d0 = dims
                        state["v_row"] = torch.zeros_like(g.mean(d0))
                        state["v_col"] = torch.zeros_like(g.mean(d1))
                beta = 1.0 - (state["step"] + 1) ** -DECAY_RATE
                g2 = g * g + EPS
                if dims is None:
                    v = state["v"].mul_(beta).add_((1 - beta) * g2)
                    u = g * v.rsqrt()
                else:
                    d1, d0 = dims
                    r = state["v_row"].mul_(beta).add_((1 - beta) * g2.mean(d0))  # shape without d0
                    c = state["v_col"].mul_(beta).add_((1 - beta) * g2.mean(d1))  # shape without d1
                    r_d1 = d1 - 1 if d1 > d0 else d1  # where d1 sits once d0 is gone
                    row_factor = (r / r.mean(r_d1, keepdim=True)).rsqrt().unsqueeze(d0)
                    col_factor = c.rsqrt().unsqueeze(d1)
                    u = g * row_factor * col_factor
                u = u / torch.clamp(rms(u) / CLIP_THRESHOLD, min=1.0)
                u = u * torch.clamp(rms(p.float()), min=PARAM_SCALE_EPS) * group["lr"]
                p.sub_(u.to(p.dtype))
                state["step"] += 1
        return None
