"""The optimizer both loops build: AdamW with the original's groups (no decay on biases and
LayerNorm weights, REFERENCE.md §1), or optax.adafactor's defaults (the original's --adafactor,
bigs/train/adafactor.py)."""

from __future__ import annotations

import torch


def param_groups(model: torch.nn.Module, weight_decay: float, verbose: bool = False) -> list[dict]:
    """AdamW groups: no decay on biases and LayerNorm weights, decay on the rest (REFERENCE.md §1).

    A parameter may carry its own settings through `model.optim_hints()` (e.g. {"weight_decay": 0.0,
    "lr_multiplier": 0.1} on the SSM parameters, declared where the model creates them; bigs/model.py).
    """
    hints = model.optim_hints() if hasattr(model, "optim_hints") else {}
    groups: dict[tuple, dict] = {}
    for name, prm in model.named_parameters():
        if not prm.requires_grad:
            continue
        no_decay = name.endswith("bias") or "LayerNorm" in name  # SSM A/log_step/D decay, as the original
        opt = hints.get(name, {})
        wd = opt.get("weight_decay", 0.0 if no_decay else weight_decay)
        mult = opt.get("lr_multiplier", 1.0)
        g = groups.setdefault((wd, mult), {"params": [], "weight_decay": wd, "lr_mult": mult})
        g["params"].append(prm)
    if verbose:
        for g in groups.values():
            n = sum(p.numel() for p in g["params"])
            print(
                f"optimizer group: weight_decay={g['weight_decay']} lr_mult={g['lr_mult']}: "
                f"{len(g['params'])} tensors, {n:,} parameters"
            )
    return list(groups.values())


def build_optimizer(
    model,
    *,
    lr: float,
    weight_decay: float,
    betas=(0.9, 0.999),
    eps: float = 1e-8,
    adafactor: bool = False,
    verbose=False,
):
    """AdamW over param_groups, or OptaxAdafactor (no weight decay, parameter scaling) with adafactor."""
    groups = param_groups(model, weight_decay, verbose=verbose)
    if adafactor:
        from bigs.train.adafactor import OptaxAdafactor

        return OptaxAdafactor(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
