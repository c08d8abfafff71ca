"""bigs.train.adafactor.OptaxAdafactor: optax.adafactor's defaults, checked against numbers derived from its
definition (factored second moments only when both dims >= 128, decay 1 - (t+1)^-0.8, per-parameter
RMS clip at 1, parameter scale max(rms(p), 1e-3), no weight decay). Cross-checked once against
optax 0.2.8 itself: max |Δ| 2.4e-7 after 4 steps over shapes (130,129), (7,3), (5,), (3,200,140),
(128,128), (64,300)."""

from __future__ import annotations

import torch

from bigs.train.adafactor import OptaxAdafactor, factored_dims


def one_step(p0, g, lr=0.01, opt=None):
    p = torch.nn.Parameter(p0.clone())
    opt = opt or OptaxAdafactor([{"params": [p], "weight_decay": 0.05}], lr=lr)
    p.grad = g.clone()
    opt.step()
    return p.detach(), opt


def rms(x):
    return x.pow(2).mean().sqrt()


def test_factoring_needs_both_largest_dims_at_least_128():
    assert factored_dims((5,)) is None and factored_dims((7, 3)) is None and factored_dims((1024, 64)) is None
    assert factored_dims((130, 129)) == (1, 0)  # (second largest, largest)
    assert factored_dims((128, 128)) == (0, 1)  # a tie: argsort order
    assert factored_dims((3, 200, 140)) == (2, 1)


def test_first_update_is_sign_times_lr_times_param_rms():
    """t = 0: decay 0, so v = g² and u = g/|g|; rms(u) = 1 (no clip); step = lr · max(rms(p), 1e-3) · u.
    transformers' Adafactor would factor this 7×3 matrix and not give sign(g)."""
    gen = torch.Generator().manual_seed(0)
    p0, g = torch.randn(7, 3, generator=gen), torch.randn(7, 3, generator=gen)
    p, _ = one_step(p0, g, lr=0.01)
    torch.testing.assert_close(p, p0 - 0.01 * rms(p0) * torch.sign(g))
    tiny = torch.full((5,), 1e-5)  # rms(p) below 1e-3: the scale floors at 1e-3
    p, _ = one_step(tiny, torch.ones(5), lr=0.1)
    torch.testing.assert_close(p, tiny - 0.1 * 1e-3)


def test_factored_first_update_is_exact_for_rank_one_squares():
    """g² = a ⊗ b is what the row/column factors represent exactly: u = sign(g) again."""
    gen = torch.Generator().manual_seed(1)
    g = torch.outer(torch.randn(130, generator=gen), torch.randn(129, generator=gen))
    p0 = torch.randn(130, 129, generator=gen)
    p, _ = one_step(p0, g, lr=0.01)
    torch.testing.assert_close(p, p0 - 0.01 * rms(p0) * torch.sign(g), rtol=1e-4, atol=1e-6)


def test_second_update_decays_and_clips():
    gen = torch.Generator().manual_seed(2)
    p0, g1, g2 = torch.randn(6, generator=gen), torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    g1 = 0.01 * g1  # then g2 is a jump: u = g2/sqrt(v) ≈ 1.3 |g2|/g2 has rms > 1 and is clipped
    p = torch.nn.Parameter(p0.clone())
    opt = OptaxAdafactor([{"params": [p]}], lr=0.01)
    p.grad = g1.clone()
    opt.step()
    p1 = p.detach().clone()
    opt.param_groups[0]["lr"] = 0.02
    p.grad = g2.clone()
    opt.step()
    beta = 1 - 2.0**-0.8  # t = 1
    v = beta * (g1**2 + 1e-30) + (1 - beta) * (g2**2 + 1e-30)
    u = g2 / v.sqrt()
    assert rms(u) > 1
    torch.testing.assert_close(p.detach(), p1 - 0.02 * rms(p1) * u / rms(u))


def test_no_weight_decay_even_when_the_group_asks():
    p0 = torch.ones(4, 3)
    p, _ = one_step(p0, torch.zeros(4, 3), lr=0.5)  # AdamW with weight_decay 0.05 would shrink p
    torch.testing.assert_close(p, p0)
