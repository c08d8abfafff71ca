"""Tests of bigs/model.py against REFERENCE.md §2 (docs/REFERENCE.md). CPU, offline, < 60 s.

Run: pytest -q tests/test_model.py
Odd tiny sizes on purpose (B 3, L 7/13, H 32, I 37, V 99) so that shape bugs cannot hide.
"""

import json
import math
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForMaskedLM, BertTokenizer, pipeline

from bigs.model import (
    S4D,
    BiGSConfig,
    BiGSForMaskedLM,
    BiGSForSequenceClassification,
    BiGSModel,
    conv_direct,
    conv_fft,
    conv_toeplitz,
    s4d_kernel,
    s4d_kernel_complex,
    ssm_conv,
)

B, H, I, V, N = 3, 32, 37, 99, 8


def tiny_config(**kw):
    base = dict(
        vocab_size=V,
        hidden_size=H,
        num_hidden_layers=2,
        intermediate_size=I,
        max_position_embeddings=40,
        num_ssm=N,
        hidden_dropout_prob=0.0,
    )
    base.update(kw)
    return BiGSConfig(**base)


def randomise_(model, seed=0):
    """Make every parameter non-trivial (biases, LayerNorm, D, A_re) so that no term can hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bias", ".D")) or "LayerNorm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            elif ".layer." in name and p.dim() == 2 and "kernel" not in name:  # O(1) layer outputs
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            if name.endswith("A_re"):
                p.copy_(-0.05 - torch.rand(p.shape, generator=g))
    return model


def random_ssm(N=N, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    A_re = -0.05 - torch.rand(N, generator=g, dtype=dtype)
    A_im = math.pi * torch.arange(N, dtype=dtype) + torch.rand(N, generator=g, dtype=dtype)
    C = torch.randn(N, 2, generator=g, dtype=dtype)
    log_step = torch.tensor([math.log(0.3)], dtype=dtype)
    return A_re, A_im, C, log_step


def batch(L, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, L), generator=g)
    ids[1, L - 3 :] = 0  # padding at the end of one row
    labels = torch.full((B, L), -100)
    labels[0, [1, 4]] = ids[0, [1, 4]]
    labels[2, [0, 2, L - 1]] = ids[2, [0, 2, L - 1]]
    labels[1, 3] = 7
    return ids, (ids != 0).long(), labels


# ---------------------------------------------------------------------------------- SSM kernel/conv


def test_real_kernel_equals_complex_kernel():
    A_re, A_im, C, log_step = random_ssm()
    A_re[0] = 0.3  # clamped to -1e-4 in both
    K = s4d_kernel(A_re, A_im, C, log_step, 13)
    K_ref = s4d_kernel_complex(A_re, A_im, C, log_step, 13)
    assert K.shape == (13,) and K.dtype == torch.float64
    torch.testing.assert_close(K, K_ref, rtol=1e-12, atol=1e-12)


def test_kernel_matches_recurrence():
    """K[l] = C Abar^l Bbar (ZOH: Abar = exp(dt A), Bbar = (Abar - 1)/A), summed over the N modes."""
    A_re, A_im, C, log_step = random_ssm()
    A = A_re + 1j * A_im
    dt = math.exp(log_step.item())
    Ab, Bb, Cc = torch.exp(dt * A), (torch.exp(dt * A) - 1) / A, C[:, 0] + 1j * C[:, 1]
    x, ks = Bb.clone(), []
    for _ in range(13):
        ks.append((Cc * x).sum().real)
        x = Ab * x
    torch.testing.assert_close(s4d_kernel(A_re, A_im, C, log_step, 13), torch.stack(ks), rtol=1e-10, atol=1e-12)


def direct_loop(u, K, D):
    """y[t] = sum_{s<=t} K[t-s] u[s] + D u[t] with explicit scalar loops (float64)."""
    L = u.shape[0]
    y = torch.zeros_like(u)
    for t in range(L):
        for s in range(t + 1):
            y[t] += K[t - s] * u[s]
        y[t] += D * u[t]
    return y


@pytest.mark.parametrize("L", [7, 13])
def test_fft_conv_equals_direct_loop_float64(L):
    A_re, A_im, C, log_step = random_ssm()
    K, D = s4d_kernel(A_re, A_im, C, log_step, L), torch.tensor([0.7], dtype=torch.float64)
    u = torch.randn(L, B, 5, dtype=torch.float64)
    ref = direct_loop(u, K, D)
    torch.testing.assert_close(conv_fft(u, K, D), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(conv_direct(u, K, D), ref, rtol=1e-12, atol=1e-12)
    # anti-causal mirror = flip(conv(flip(u)))
    ref_rev = direct_loop(u.flip(0), K, D).flip(0)
    torch.testing.assert_close(conv_fft(u, K, D, reverse=True), ref_rev, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("L", [7, 13])
@pytest.mark.parametrize("reverse", [False, True])
def test_toeplitz_equals_fft(L, reverse):
    A_re, A_im, C, log_step = random_ssm(dtype=torch.float32)
    K, D = s4d_kernel(A_re, A_im, C, log_step, L), torch.tensor([-0.4])
    u = torch.randn(L, B, H)
    torch.testing.assert_close(conv_toeplitz(u, K, D, reverse), conv_fft(u, K, D, reverse), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ssm_conv(u, K, D, "auto", reverse), conv_fft(u, K, D, reverse), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("L", [7, 13])
@pytest.mark.parametrize("reverse", [False, True])
def test_conv_gradients_agree_with_the_direct_reference_float64(L, reverse):
    """Gradients w.r.t. the input, the kernel parameters (through K) and D: FFT and Toeplitz against
    the O(L²) direct convolution (mamba's fast-path-vs-reference check, outputs *and* gradients)."""
    grads = {}
    for impl in ("direct", "fft", "toeplitz"):
        torch.manual_seed(3)
        A_re, A_im, C, log_step = (t.requires_grad_() for t in random_ssm())
        D = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
        u = torch.randn(L, B, 5, dtype=torch.float64, requires_grad=True)
        K = s4d_kernel(A_re, A_im, C, log_step, L)
        y = ssm_conv(u, K, D, impl, reverse)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
        grads[impl] = [t.grad for t in (u, A_re, A_im, C, log_step, D)]
    for impl in ("fft", "toeplitz"):
        for name, g, ref in zip(("u", "A_re", "A_im", "C", "log_step", "D"), grads[impl], grads["direct"]):
            torch.testing.assert_close(g, ref, rtol=1e-9, atol=1e-10, msg=f"{impl}: d/d{name}")


@pytest.mark.parametrize("impl", ["fft", "toeplitz", "direct"])
@pytest.mark.parametrize("reverse", [False, True])
def test_ssm_direction_sees_only_its_side(impl, reverse):
    """Forward SSM: y[t] has zero gradient w.r.t. u[s > t]; backward SSM (reverse): w.r.t. u[s < t]."""
    cfg = tiny_config(conv_impl=impl)
    ssm = S4D(cfg)
    L, t = 13, 6
    u = torch.randn(L, B, H, requires_grad=True)
    ssm(u, reverse=reverse)[t].sum().backward()
    g = u.grad.abs().sum((1, 2))  # (L,)
    future, past = g[t + 1 :], g[:t]
    blind, seen = (past, future) if reverse else (future, past)
    tol = 1e-5 * g.max().item() if impl == "fft" else 0.0  # FFT round-off leaks ~1e-7; others exact
    assert blind.max().item() <= tol
    assert seen.min().item() > 0 and g[t].item() > 0


def test_layer_branches_causal_and_layer_sees_both_sides():
    """In the layer: Yf Wucf at t depends on x[<= t] only, flip(Yb Wucb) on x[>= t] only; out on both."""
    model = randomise_(BiGSModel(tiny_config(num_hidden_layers=1))).eval()
    layer = model.encoder.layer[0]
    caught = {}
    hooks = [
        layer.duc_forward.register_forward_hook(lambda m, i, o: caught.__setitem__("f", o)),
        layer.duc_backward.register_forward_hook(lambda m, i, o: caught.__setitem__("b", o)),
    ]
    L, t = 13, 5
    x = torch.randn(L, B, H, requires_grad=True)  # sequence-first, as the encoder feeds layers
    out = layer(x)
    for h in hooks:
        h.remove()

    def grad_profile(y):
        (gx,) = torch.autograd.grad(y[t].sum(), x, retain_graph=True)
        return gx.abs().sum((1, 2))  # (L,)

    gf, gb, go = grad_profile(caught["f"]), grad_profile(caught["b"]), grad_profile(out)
    assert gf[t + 1 :].max().item() == 0.0 and gf[: t + 1].min().item() > 0
    assert gb[:t].max().item() == 0.0 and gb[t:].min().item() > 0
    assert go.min().item() > 0  # the full layer depends on both sides


@pytest.mark.parametrize("scaling", ["hippo", "lin", "inv"])
def test_inits_give_documented_A(scaling):
    assert tiny_config(ssm_init=scaling).scaling == scaling == tiny_config(scaling=scaling).ssm_init  # alias
    model = BiGSModel(tiny_config(num_ssm=16, scaling=scaling))
    k = model.encoder.layer[1].bs4.kernel
    n = np.arange(16)
    if scaling == "lin":
        expected_im = np.pi * n
    elif scaling == "inv":
        expected_im = (16 / np.pi) * (16 / (2 * n + 1) - 1)
    else:  # eigenvalues of the normal part of HiPPO-LegS, computed here with a general eig
        p = np.sqrt(1 + 2 * n)
        S = -(np.tril(np.outer(p, p)) - np.diag(n)) + np.outer(np.sqrt(n + 0.5), np.sqrt(n + 0.5))
        lam = np.linalg.eigvals(S)
        np.testing.assert_allclose(lam.real, -0.5, atol=1e-8)
        expected_im = np.sort(lam.imag)
    np.testing.assert_allclose(k.A_re.detach().numpy(), -0.5)
    np.testing.assert_allclose(k.A_im.detach().numpy(), expected_im, rtol=1e-5, atol=1e-4)
    assert k.C.shape == (16, 2) and k.log_step.shape == (1,)
    assert math.log(0.01) <= k.log_step.item() <= 0.0
    assert model.encoder.layer[0].fs4.D.item() == 1.0
    if scaling == "hippo":  # the skew part's eigenvalues come in +- pairs
        np.testing.assert_allclose(expected_im, -expected_im[::-1], atol=1e-6)


# ---------------------------------------------------------------------------------- slow reference


def reference_logits(sd, cfg, ids, tt):
    """REFERENCE.md §2 written out plainly: (B, L) ids -> (B, L, V) logits, complex kernel, loop conv."""
    eps, Lq = cfg.layer_norm_eps, ids.shape[1]
    ln = lambda x, p: F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], eps)
    lin = lambda x, p: x @ sd[p + ".weight"].T + sd[p + ".bias"]
    gelu = lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    e = "bigs.embeddings."
    x = sd[e + "word_embeddings.weight"][ids] + sd[e + "position_embeddings.weight"][torch.arange(Lq)]
    x = ln(x + sd[e + "token_type_embeddings.weight"][tt], e + "LayerNorm")  # (B L H)

    def ssm(u, p):  # u (B L H), causal along L
        A = torch.clamp(sd[p + ".kernel.A_re"], max=-1e-4) + 1j * sd[p + ".kernel.A_im"]
        dt = torch.exp(sd[p + ".kernel.log_step"])
        Cc = sd[p + ".kernel.C"][:, 0] + 1j * sd[p + ".kernel.C"][:, 1]
        K = torch.stack([(Cc * (torch.exp(dt * A) - 1) / A * torch.exp(l * dt * A)).sum().real for l in range(Lq)])
        y = torch.stack([sum(K[t - s] * u[:, s] for s in range(t + 1)) for t in range(Lq)], 1)
        return y + sd[p + ".D"] * u

    for i in range(cfg.num_hidden_layers):
        p = f"bigs.encoder.layer.{i}."
        Z = ln(x, p + "LayerNorm")
        Vv = gelu(lin(Z, p + "dv"))
        Uf = gelu(lin(Z, p + "du_forward"))
        Ub = gelu(lin(Z.flip(1), p + "du_backward"))
        G = lin(ssm(Uf, p + "fs4"), p + "duc_forward") * lin(ssm(Ub, p + "bs4"), p + "duc_backward").flip(1)
        x = x + lin(gelu(lin(G, p + "dol")) * Vv, p + "do")
    c = "cls.predictions."
    h = ln(gelu(lin(x, c + "transform.dense")), c + "transform.LayerNorm")
    return h @ sd["bigs.embeddings.word_embeddings.weight"].T + sd[c + "bias"]


@pytest.mark.parametrize("L,impl", [(7, "auto"), (13, "fft"), (13, "toeplitz")])
def test_model_equals_slow_reference(L, impl):
    model = randomise_(BiGSForMaskedLM(tiny_config(conv_impl=impl))).eval()
    ids, mask, _ = batch(L)
    tt = torch.zeros_like(ids)
    tt[0, 2:] = 1
    with torch.no_grad():
        got = model(ids, attention_mask=mask, token_type_ids=tt).logits
        ref = reference_logits(model.state_dict(), model.config, ids, tt)
    assert got.shape == (B, L, V)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------- MLM head


def test_masked_head_equals_full_head_loss_and_every_gradient():
    torch.manual_seed(0)
    full = randomise_(BiGSForMaskedLM(tiny_config(mlm_head="full")))
    masked = BiGSForMaskedLM(tiny_config(mlm_head="masked"))
    masked.load_state_dict(full.state_dict())
    ids, mask, labels = batch(13)
    out_f, out_m = full(ids, mask, labels=labels), masked(ids, mask, labels=labels)
    assert out_f.logits.shape == (B, 13, V) and out_m.logits.shape == (6, V)
    torch.testing.assert_close(out_m.logits, out_f.logits[labels != -100])  # row-major order
    # the loss is the mean CE over labelled positions
    sel = labels != -100
    manual = -torch.log_softmax(out_f.logits[sel], -1)[torch.arange(6), labels[sel]].mean()
    torch.testing.assert_close(out_f.loss, manual)
    torch.testing.assert_close(out_m.loss, out_f.loss)
    out_f.loss.backward()
    out_m.loss.backward()
    grads_m = dict(masked.named_parameters())
    for name, p in full.named_parameters():
        if "pooler" in name:  # in every checkpoint, unused by the MLM
            continue
        assert p.grad is not None, name
        torch.testing.assert_close(grads_m[name].grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_fixed_shape_gather_head_equals_boolean_head():
    """masked_positions (B, P) + labels (B, P), -100 in padding slots (XLA path)."""
    model = randomise_(BiGSForMaskedLM(tiny_config()))
    ids, mask, labels = batch(13)
    P = 4
    positions = torch.zeros(B, P, dtype=torch.long)  # padding slots point at position 0
    slot_labels = torch.full((B, P), -100)
    for b in range(B):
        pos = (labels[b] != -100).nonzero().flatten()
        positions[b, : len(pos)] = pos
        slot_labels[b, : len(pos)] = labels[b, pos]
    ref = model(ids, mask, labels=labels)
    out = model(ids, mask, labels=slot_labels, masked_positions=positions)
    assert out.logits.shape == (B, P, V)
    torch.testing.assert_close(out.loss, ref.loss)
    torch.testing.assert_close(out.logits[slot_labels != -100], ref.logits)
    (g_ref,) = torch.autograd.grad(ref.loss, model.bigs.embeddings.word_embeddings.weight)
    (g_out,) = torch.autograd.grad(out.loss, model.bigs.embeddings.word_embeddings.weight)
    torch.testing.assert_close(g_out, g_ref)


# ---------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_exact_and_tied(tmp_path):
    model = randomise_(BiGSForMaskedLM(tiny_config())).eval()
    assert model.cls.predictions.decoder.weight is model.bigs.embeddings.word_embeddings.weight
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = BiGSForMaskedLM.from_pretrained(tmp_path).eval()
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    ids, mask, _ = batch(7)
    assert torch.equal(model(ids, mask).logits, loaded(ids, mask).logits)
    # still tied after loading: one tensor, so an update to one is an update to the other
    assert loaded.cls.predictions.decoder.weight is loaded.bigs.embeddings.word_embeddings.weight
    with torch.no_grad():
        loaded.bigs.embeddings.word_embeddings.weight[5, 0] += 1.0
    assert torch.equal(loaded.cls.predictions.decoder.weight[5], loaded.bigs.embeddings.word_embeddings.weight[5])


def published_state_dict(cfg, seed=0):
    """A state dict written by hand with the published names and shapes (REFERENCE.md §2)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, s=0.1: s * torch.randn(*shape, generator=g)
    Hh, Ii, Nn = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_ssm"]
    sd = {
        "bigs.embeddings.word_embeddings.weight": r(cfg["vocab_size"], Hh),
        "bigs.embeddings.position_embeddings.weight": r(cfg["max_position_embeddings"], Hh),
        "bigs.embeddings.token_type_embeddings.weight": r(cfg["type_vocab_size"], Hh),
        "bigs.embeddings.LayerNorm.weight": 1 + r(Hh),
        "bigs.embeddings.LayerNorm.bias": r(Hh),
        "bigs.embeddings.position_ids": torch.arange(cfg["max_position_embeddings"])[None],  # old buffer
        "bigs.pooler.dense.weight": r(Hh, Hh),
        "bigs.pooler.dense.bias": r(Hh),
        "cls.predictions.bias": r(cfg["vocab_size"]),
        "cls.predictions.transform.dense.weight": r(Hh, Hh),
        "cls.predictions.transform.dense.bias": r(Hh),
        "cls.predictions.transform.LayerNorm.weight": 1 + r(Hh),
        "cls.predictions.transform.LayerNorm.bias": r(Hh),
    }
    sd["cls.predictions.decoder.weight"] = sd["bigs.embeddings.word_embeddings.weight"].clone()
    sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"].clone()
    shapes = {
        "dv": (Ii, Hh),
        "du_forward": (Hh, Hh),
        "du_backward": (Hh, Hh),
        "duc_forward": (Hh, Hh),
        "duc_backward": (Hh, Hh),
        "dol": (Ii, Hh),
        "do": (Hh, Ii),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"bigs.encoder.layer.{i}."
        sd[p + "LayerNorm.weight"], sd[p + "LayerNorm.bias"] = 1 + r(Hh), r(Hh)
        for name, shape in shapes.items():
            sd[p + name + ".weight"], sd[p + name + ".bias"] = r(*shape, s=0.2), r(shape[0])
        for d in ("fs4", "bs4"):
            sd[p + d + ".D"] = r(1, s=1.0)
            sd[p + d + ".kernel.C"] = r(Nn, 2, s=0.7)
            sd[p + d + ".kernel.log_step"] = torch.tensor([math.log(0.05)]) + r(1)
            sd[p + d + ".kernel.A_re"] = -0.5 + r(Nn)
            sd[p + d + ".kernel.A_im"] = math.pi * torch.arange(Nn) + r(Nn)
    return sd


PUBLISHED_CONFIG = {  # field names of the published config.json, tiny values
    "architectures": ["BiGSForMaskedLM"],
    "model_type": "BiGS",
    "vocab_size": V,
    "hidden_size": H,
    "num_hidden_layers": 2,
    "intermediate_size": I,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "max_position_embeddings": 40,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "num_ssm": N,
    "pre_norm": True,
    "decode": False,
    "scaling": "lin",
    "pooler_type": "non_padding_mean",
    "use_pykeops_kernel": False,
    "position_embedding_type": "absolute",
    "use_cache": True,
    "classifier_dropout": None,
    "torch_dtype": "float32",
    "transformers_version": "4.21.0",
}


def write_published_dir(path):
    sd = published_state_dict(PUBLISHED_CONFIG)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(PUBLISHED_CONFIG))
    return sd


def test_published_key_names_load_and_match(tmp_path):
    sd = write_published_dir(tmp_path)
    model, info = BiGSForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info.get("mismatched_keys")
    model.eval()
    ours = model.state_dict()
    for k, v in sd.items():
        if k != "bigs.embeddings.position_ids":
            assert torch.equal(ours[k], v), k
    assert model.cls.predictions.decoder.weight is model.bigs.embeddings.word_embeddings.weight
    ids, mask, _ = batch(13)
    tt = torch.zeros_like(ids)
    with torch.no_grad():
        got = model(ids, attention_mask=mask, token_type_ids=tt).logits
        ref = reference_logits(sd, model.config, ids, tt)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # and we save under the same names
    model.save_pretrained(tmp_path / "again")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "again" / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    assert "bigs.encoder.layer.1.bs4.kernel.A_im" in saved and "cls.predictions.transform.dense.weight" in saved
    assert saved <= set(sd)


def test_auto_classes_and_sequence_classification(tmp_path):
    write_published_dir(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "BiGSConfig"
    model = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert isinstance(model, BiGSForMaskedLM)
    clf = BiGSForSequenceClassification.from_pretrained(tmp_path, num_labels=1).eval()
    ids, mask, _ = batch(13)
    y = torch.randn(B)
    out = clf(ids, attention_mask=mask, labels=y)
    assert out.logits.shape == (B, 1)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), y))
    # pooler: mean over non-pad positions -> dense -> tanh
    h = clf.bigs(ids, attention_mask=mask).last_hidden_state
    m = mask[..., None].float()
    pooled = torch.tanh(clf.bigs.pooler.dense((h * m).sum(1) / m.sum(1)))
    torch.testing.assert_close(clf.classifier(pooled), out.logits)


def test_fill_mask_pipeline_with_bundled_vocab():
    vocab = resources.files("bigs.data") / "vocab" / "bert-large-uncased-vocab.txt"
    tok = BertTokenizer(vocab=str(vocab), do_lower_case=True)
    assert len(tok) == 30522
    model = BiGSForMaskedLM(tiny_config(vocab_size=30522, num_hidden_layers=1, max_position_embeddings=64)).eval()
    fill = pipeline("fill-mask", model=model, tokenizer=tok, device="cpu")
    res = fill("Paris is the [MASK] of France.", top_k=3)
    assert len(res) == 3 and all(0 < r["score"] < 1 for r in res)
    assert res[0]["score"] >= res[1]["score"] >= res[2]["score"]


# ---------------------------------------------------------------------------------- options


def test_optimizer_hints_on_parameters(tmp_path):
    model = BiGSForMaskedLM(tiny_config(ssm_lr_multiplier=0.1, ssm_weight_decay=False))
    k = model.bigs.encoder.layer[0].fs4.kernel
    assert k.A_re._optim == {"lr_multiplier": 0.1, "weight_decay": 0.0}
    assert k.log_step._optim == k.A_im._optim == k.A_re._optim
    assert not hasattr(k.C, "_optim") and not hasattr(model.bigs.encoder.layer[0].dv.weight, "_optim")
    model.save_pretrained(tmp_path)
    hints = BiGSForMaskedLM.from_pretrained(tmp_path).optim_hints()
    assert len(hints) == 2 * 2 * 3 and hints["bigs.encoder.layer.1.bs4.kernel.log_step"]["lr_multiplier"] == 0.1
    assert BiGSForMaskedLM(tiny_config()).optim_hints() == {}  # faithful default: no exceptions


def test_gradient_checkpointing_same_gradients():
    ids, mask, labels = batch(13)
    model = randomise_(BiGSForMaskedLM(tiny_config()))
    model(ids, mask, labels=labels).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if "pooler" not in n}
    model.zero_grad()
    # newer transformers renamed it (the old name warns); older releases have only the old one
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    assert model.bigs.encoder.gradient_checkpointing
    model(ids, mask, labels=labels).loss.backward()
    for n, g in ref.items():
        torch.testing.assert_close(model.get_parameter(n).grad, g, rtol=1e-5, atol=1e-7, msg=n)


def test_bf16_autocast_keeps_kernel_and_conv_fp32():
    model = randomise_(BiGSForMaskedLM(tiny_config())).eval()
    ids, mask, labels = batch(13)
    seen = []
    model.bigs.encoder.layer[0].fs4.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    ref = model(ids, mask, labels=labels).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, mask, labels=labels).loss
    assert seen[-1] == (torch.bfloat16, torch.float32)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert abs(out.item() - ref.item()) < 0.05 * abs(ref.item())


def test_flops_per_token():
    cfg = tiny_config(num_hidden_layers=3)
    model = BiGSForMaskedLM(cfg)
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layer." in n]
    dense = sum(m.weight.numel() for m in linears)  # 3 H I + 4 H^2 per layer
    head = H * H + H * V
    L = 13
    conv = 3 * 2 * H * (L + 1)  # toeplitz at L 13: causal half per direction
    assert cfg.flops_per_token(L, mlm_fraction=0.25) == pytest.approx(6 * dense + 3 * conv + 6 * head * 0.25)
    assert cfg.flops_per_token(L, training=False) == pytest.approx(2 * dense + conv + 2 * head)
    assert BiGSConfig(conv_impl="fft").flops_per_token(128) < BiGSConfig(conv_impl="toeplitz").flops_per_token(128)


# ----------------------------------------------------------------------------- the original's details (REFERENCE.md §4)
def test_embedding_dropout_mask_is_shared_by_the_batch_as_the_original():
    """jax.vmap over the batch with one dropout RNG: every sequence of a micro-batch gets the same
    (L, H) mask, the next micro-batch another; "per_example" is nn.Dropout's mask per sequence."""
    torch.manual_seed(0)
    p, L = 0.3, 13
    model = BiGSModel(tiny_config(hidden_dropout_prob=p))
    ids = torch.randint(1, V, (1, L)).expand(5, L)  # five copies of one sequence
    emb = model.embeddings.eval()
    clean = emb(ids)  # (5 L H)
    emb.train()
    a, b = emb(ids), emb(ids)
    dropped_a, dropped_b = a == 0, b == 0
    assert (dropped_a == dropped_a[:1]).all(), "sequences of one batch must share the mask"
    assert not torch.equal(dropped_a[0], dropped_b[0]), "each micro-batch draws a new mask"
    assert abs(dropped_a[0].float().mean().item() - p) < 0.08  # L·H = 416 draws: 4.5 standard errors
    kept = ~dropped_a
    torch.testing.assert_close(a[kept], clean[kept] / (1 - p))  # flax: where(keep, x / keep_prob, 0)

    per_example = BiGSModel(tiny_config(hidden_dropout_prob=p, dropout_mask="per_example")).embeddings.train()
    dropped = per_example(ids) == 0
    assert not (dropped == dropped[:1]).all()


def test_padding_row_starts_random_and_trains_as_the_original():
    torch.manual_seed(0)
    model = BiGSForMaskedLM(tiny_config())
    row0 = model.bigs.embeddings.word_embeddings.weight[0]
    assert row0.abs().min() > 0 and 0.005 < row0.std().item() < 0.05  # N(0, 0.02) like every other row
    ids = torch.tensor([[1, 7, 3, 9, 2, 0, 0]])  # [PAD] = 0 in the input
    labels = torch.full_like(ids, -100)
    labels[0, 2] = 8
    model(ids, labels=labels).loss.backward()
    assert model.bigs.embeddings.word_embeddings.weight.grad[0].abs().sum() > 0
    model.zero_grad()
    model(ids[:, :5], labels=labels[:, :5]).loss.backward()  # no pad in the input: the tied decoder alone
    assert model.bigs.embeddings.word_embeddings.weight.grad[0].abs().sum() > 0


def test_mlm_transform_dense_is_lecun_normal_as_flax():
    """flax nn.Dense default: variance_scaling(1, fan_in, truncated_normal) = std 1/sqrt(fan_in),
    |w| <= 2 / sqrt(fan_in) / 0.8796; every other dense layer stays N(0, initializer_range)."""
    torch.manual_seed(0)
    Hb = 256
    model = BiGSForMaskedLM(tiny_config(hidden_size=Hb, intermediate_size=37))
    w = model.cls.predictions.transform.dense.weight
    assert w.std().item() == pytest.approx(Hb**-0.5, rel=0.02)
    assert w.abs().max().item() <= 2 * Hb**-0.5 / 0.87962566103423978 + 1e-6
    assert w.abs().max().item() > 1.9 * Hb**-0.5  # truncated at 2 s, not at 1
    other = model.bigs.encoder.layer[0].dv.weight
    assert other.std().item() == pytest.approx(0.02, rel=0.05)
