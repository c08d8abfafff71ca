"""BiGS — bidirectional gated SSM encoder ("Pretraining Without Attention", Wang, Yan, Gu, Rush 2022).

The math is REFERENCE.md §2 (docs/REFERENCE.md), written top to bottom in this file:
S4D kernel -> causal convolution (fft | toeplitz | direct reference) -> BiGS layer -> encoder ->
heads -> Hugging Face classes. No I/O, logging, DDP or device logic here (STYLE.md §1).

Using it
    from bigs.model import BiGSConfig, BiGSForMaskedLM
    model = BiGSForMaskedLM(BiGSConfig(hidden_size=1024, num_hidden_layers=23, intermediate_size=3072))
    out = model(input_ids, attention_mask, labels=labels)        # labels: (B, L) ids, -100 = ignore
    model.save_pretrained(d); BiGSForMaskedLM.from_pretrained(d)  # safetensors, published key names
    AutoModelForMaskedLM.from_pretrained(d); pipeline("fill-mask", model=d, tokenizer=tok)  # after import
Importing this module registers model_type "BiGS" with AutoConfig / AutoModel /
AutoModelForMaskedLM / AutoModelForSequenceClassification, so published checkpoints
(JunxiongWang/BiGS_128 ...) and directories we write load the same way.

Parameter names are exactly the published ones (`bigs.encoder.layer.{i}.fs4.kernel.A_re`,
`cls.predictions.decoder.weight`, ...), so no conversion is needed in either direction.

Layout: inside the encoder activations are sequence-first, (L, B, H). Every dense layer acts on the
last axis, so this changes nothing in the math, and the Toeplitz convolution becomes ONE plain GEMM
(L, L) @ (L, B*H) with no copies. The model's inputs and outputs are (B, L, ...) as usual.

MLM head and loss (docs/DESIGN.md "Model"): labels follow the HF convention (-100 = ignore); the loss
is the mean cross-entropy over labelled positions (= the original's sum / n_masked).
  * `labels` (B, L), config.mlm_head == "masked" (default): the head runs only at the labelled
    positions; `logits` is (n_labelled, V) in row-major order of `labels != -100`. Same loss and
    gradients as the full head (tested), 60-70 % less work at small sizes (REFERENCE.md §4).
    Boolean indexing gives a data-dependent shape.
  * XLA / fixed shapes: pass `masked_positions` (B, P) int64 (e.g. the shard's masked_lm_positions)
    with `labels` (B, P) = the ids at those positions and -100 in padding slots (where the shard has
    position 0 / id 0). The head gathers exactly P rows per sequence; `logits` is (B, P, V); the
    loss is the mean over slots whose label != -100. No data-dependent shapes anywhere, so XLA
    compiles one graph per step. Use it together with conv_impl="toeplitz" (FFT has no XLA
    lowering, REFERENCE.md §4); the kernel below is already real arithmetic (no complex division).
  * no labels, or config.mlm_head == "full": `logits` is (B, L, V) (this is what pipelines use).

Optimizer hints: the SSM parameters A_re, A_im, log_step carry a dict `param._optim` (as in
state-spaces s4d) when config.ssm_lr_multiplier != 1 or config.ssm_weight_decay is False:
`{"lr_multiplier": 0.1, "weight_decay": 0.0}` (keys present only when they differ from the default
group). The trainer puts such parameters in their own AdamW group. `BiGSPreTrainedModel.optim_hints()`
returns {name: dict} for the same parameters (robust to anything that re-creates Parameter objects).
Defaults are the faithful ones: the Flax code declares lr 0.1x / no decay but the public pretraining
script never applies it (REFERENCE.md §2), so by default everything is decayed at the base lr
except biases and LayerNorm weights (the trainer's rule).

FLOPs: `config.flops_per_token(seq_len, mlm_fraction=...)` gives training (fwd + bwd) model FLOPs
per token position for MFU.

Known deviations from the original: the Flax layers use tanh-approximate gelu (`flax.linen.gelu`),
the PyTorch port (and this file) exact erf gelu; the difference is < 1e-3 per activation. `decode`
(RNN-mode inference) is accepted in the config and ignored, like the port does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling, MaskedLMOutput, SequenceClassifierOutput

# Toeplitz GEMM for L <= this (per device type), rfft/irfft above. CPU: `benchmarks/bench_length.py
# --conv both` (2 cores, fp32, H 256 I 512 2 layers, 4096 tokens per training step, Dec 2026): Toeplitz /
# FFT training-step tokens/s 7,236 / 6,657 at L 128, 6,703 / 6,204 at 512, 5,900 / 5,696 at 1024,
# 4,409 / 5,894 at 2048, 2,146 / 6,057 at 4096 -> the switch belongs between 1024 and 2048
# (bench_model.py's conv-only sweep agrees: fft/toeplitz time 1.25 at 1024, 0.86 at 2048). CUDA: not
# measured yet (benchmarks/gpu_check.sh times both at 1024 and 2048); XLA always takes the GEMM.
AUTO_TOEPLITZ_MAX_LEN = {"cpu": 1024, "cuda": 1024}

CONV_IMPLS = ("auto", "fft", "toeplitz", "direct")
SSM_INITS = ("hippo", "lin", "inv")
MLM_HEADS = ("masked", "full")
DROPOUT_MASKS = ("shared", "per_example")


# ------------------------------------------------------------------------------------------------
# Configuration


class BiGSConfig(PretrainedConfig):
    """Published fields (REFERENCE.md §2; defaults = the original configuration_bigs.py) + our options.

    Our options, all defaulting to the faithful behaviour:
      conv_impl          "auto" | "fft" | "toeplitz" | "direct" (slow reference). auto: Toeplitz GEMM for
                         L <= AUTO_TOEPLITZ_MAX_LEN[device type] else FFT. Same numbers either way (tested).
      scaling            SSM init of A, published name (alias `ssm_init`): "hippo" (Flax default),
                         "lin" (what the PyTorch port always does), "inv".
      ssm_lr_multiplier  lr factor for A_re, A_im, log_step (Flax declares 0.1; never applied: 1.0).
      ssm_weight_decay   decay A_re, A_im, log_step (the original does: True).
      gradient_checkpointing  recompute each layer in backward (also model.activation_checkpointing_enable(),
                         gradient_checkpointing_enable() in older transformers).
      mlm_head           "masked" (head only at labelled positions when labels are given) | "full".
      dropout_mask       "shared": one (L, H) embedding-dropout mask for every sequence of a batch, as
                         the original pretraining (jax.vmap over the batch with one dropout RNG,
                         REFERENCE.md §5a) | "per_example": a mask per sequence (nn.Dropout, the port).
    """

    model_type = "BiGS"
    attribute_map = {"ssm_init": "scaling"}

    def __init__(
        self,
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=24,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        classifier_dropout=None,
        num_ssm=64,
        pre_norm=True,
        decode=False,
        scaling="hippo",
        pooler_type="non_padding_mean",
        use_pykeops_kernel=False,
        conv_impl="auto",
        ssm_lr_multiplier=1.0,
        ssm_weight_decay=True,
        gradient_checkpointing=False,
        mlm_head="masked",
        dropout_mask="shared",
        tie_word_embeddings=True,
        **kwargs,
    ):
        if "ssm_init" in kwargs:  # alias of the published field `scaling`
            scaling = kwargs.pop("ssm_init")
        assert conv_impl in CONV_IMPLS, f"conv_impl={conv_impl!r}: use one of {CONV_IMPLS}"
        assert scaling in SSM_INITS, f"scaling (ssm_init)={scaling!r}: use one of {SSM_INITS}"
        assert mlm_head in MLM_HEADS, f"mlm_head={mlm_head!r}: use one of {MLM_HEADS}"
        assert dropout_mask in DROPOUT_MASKS, f"dropout_mask={dropout_mask!r}: use one of {DROPOUT_MASKS}"
        assert pooler_type in ("non_padding_mean", "mean"), f"pooler_type={pooler_type!r}"
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.classifier_dropout = classifier_dropout
        self.num_ssm = num_ssm
        self.pre_norm = pre_norm
        self.decode = decode
        self.scaling = scaling
        self.pooler_type = pooler_type
        self.use_pykeops_kernel = use_pykeops_kernel
        self.conv_impl = conv_impl
        self.ssm_lr_multiplier = ssm_lr_multiplier
        self.ssm_weight_decay = ssm_weight_decay
        self.gradient_checkpointing = gradient_checkpointing
        self.mlm_head = mlm_head
        self.dropout_mask = dropout_mask
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    def flops_per_token(self, seq_len: int, mlm_fraction: float | None = None, training: bool = True) -> float:
        """Model FLOPs per token position (multiply-add = 2), for MFU.

        Dense matmuls per layer: Wv, Wol (H x I), Wo (I x H), Wuf, Wub, Wucf, Wucb (H x H).
        SSM convolution per layer, two directions, as the resolved conv_impl computes it:
        Toeplitz = the causal half of the L x L product, H (L + 1) per direction;
        FFT = 2 real FFTs of length 2L (~2.5 n log2 n each) + a complex product, per channel.
        MLM head (H x H transform + H x V decoder) at a fraction `mlm_fraction` of the positions
        (None = every position, i.e. mlm_head "full"). Embedding lookups, norms, gelu and the kernel
        generation (N x L per layer) are ignored. training: forward + backward = 3 x forward.
        """
        H, I, V, L = self.hidden_size, self.intermediate_size, self.vocab_size, seq_len
        dense = 2 * (3 * H * I + 4 * H * H)  # per layer
        if resolve_conv_impl(self.conv_impl, L) == "fft":
            n = 2 * L
            conv = 2 * H * (2 * 2.5 * n * math.log2(n) + 6 * (L + 1)) / L
        else:  # toeplitz (and the direct reference) do the causal half of L x L per channel
            conv = 2 * H * (L + 1)
        head = 2 * (H * H + H * V) * (1.0 if mlm_fraction is None else mlm_fraction)
        forward = self.num_hidden_layers * (dense + conv) + head
        return 3 * forward if training else forward


# ------------------------------------------------------------------------------------------------
# S4D kernel (REFERENCE.md §2): one kernel per direction per layer, shared by all H channels.
#   A = min(A_re, -1e-4) + i A_im,  dt = exp(log_step),  C = C[:,0] + i C[:,1]
#   K[l] = Re( sum_n C_n (exp(dt A_n) - 1) / A_n * exp(l dt A_n) ),  l = 0..L-1


def hippo_A_imag(N: int) -> torch.Tensor:
    """Imaginary parts of the diagonalised normal-HiPPO (LegS) matrix (Flax make_DPLR_HiPPO).

    S = -HiPPO + P P^T with P_n = sqrt(n + 1/2) is -1/2 I + (skew-symmetric); its eigenvalues are
    -1/2 + i lambda with lambda the eigenvalues of the Hermitian matrix -i (S + I/2), ascending.
    """
    n = torch.arange(N, dtype=torch.float64)
    p = torch.sqrt(1 + 2 * n)  # (N,)
    hippo = torch.tril(p[:, None] * p[None, :]) - torch.diag(n)  # (N N) the LegS matrix (positive)
    P = torch.sqrt(n + 0.5)  # (N,)
    S = -hippo + P[:, None] * P[None, :]  # (N N) normal part; diag(S) = -1/2
    skew = S - torch.diag(torch.diagonal(S))  # (N N) skew-symmetric
    return torch.linalg.eigvalsh(-1j * skew.to(torch.complex128)).float()  # (N,) ascending


def init_A(N: int, scaling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_re, A_im) at init, as the Flax S4dLayer does for each `scaling`."""
    n = torch.arange(N, dtype=torch.float32)
    A_re = torch.full((N,), -0.5)  # (N,) all three inits
    if scaling == "hippo":
        A_im = hippo_A_imag(N)
    elif scaling == "lin":
        A_im = math.pi * n  # S4D-Lin
    elif scaling == "inv":
        A_im = (N / math.pi) * (N / (2 * n + 1) - 1)  # S4D-Inv
    else:
        raise ValueError(f"scaling={scaling!r}: use one of {SSM_INITS}")
    return A_re, A_im


def s4d_kernel(A_re, A_im, C, log_step, L: int) -> torch.Tensor:
    """K (L,) in real arithmetic only (no complex dtype, no division by a complex: XLA-safe, §4).

    With a = min(A_re, -1e-4), b = A_im, dt = exp(log_step):
      W = C (exp(dt A) - 1) / A                        (complex division written out: / |A|^2)
      K[l] = sum_n exp(l dt a_n) (Re W_n cos(l dt b_n) - Im W_n sin(l dt b_n))
    """
    f = torch.promote_types(A_re.dtype, torch.float32)  # fp32 at least (bf16/fp16 params too)
    a = torch.clamp(A_re.to(f), max=-1e-4)  # (N,)
    b = A_im.to(f)  # (N,)
    dt = torch.exp(log_step.to(f))  # (1,)
    c_re, c_im = C.to(f).unbind(-1)  # (N,), (N,)
    ea = torch.exp(dt * a)  # (N,) |exp(dt A)|
    e_re, e_im = ea * torch.cos(dt * b) - 1, ea * torch.sin(dt * b)  # (N,) exp(dt A) - 1
    den = a * a + b * b  # (N,) |A|^2 > 0 since a <= -1e-4
    q_re, q_im = (e_re * a + e_im * b) / den, (e_im * a - e_re * b) / den  # (N,) (exp(dt A) - 1) / A
    w_re, w_im = c_re * q_re - c_im * q_im, c_re * q_im + c_im * q_re  # (N,) W = C q
    l = torch.arange(L, device=a.device, dtype=f)  # (L,)
    phase = (dt * b)[:, None] * l  # (N L)
    decay = torch.exp((dt * a)[:, None] * l)  # (N L)
    return (decay * (w_re[:, None] * torch.cos(phase) - w_im[:, None] * torch.sin(phase))).sum(0)  # (L,)


def s4d_kernel_complex(A_re, A_im, C, log_step, L: int) -> torch.Tensor:
    """Reference: the same kernel written with complex numbers, as the equations read."""
    A = torch.clamp(A_re, max=-1e-4) + 1j * A_im  # (N,)
    dt = torch.exp(log_step)  # (1,)
    Cc = C[:, 0] + 1j * C[:, 1]  # (N,)
    W = Cc * (torch.exp(dt * A) - 1) / A  # (N,)
    l = torch.arange(L, device=A_re.device)  # (L,)
    return (W[:, None] * torch.exp(dt * A[:, None] * l)).sum(0).real  # (L,)


# ------------------------------------------------------------------------------------------------
# Causal convolution y[t] = sum_{s<=t} K[t-s] u[s] + D u[t] along the FIRST axis (sequence-first).
# reverse=True is the anti-causal mirror flip(conv(flip(u))) = sum_{s>=t} K[s-t] u[s] + D u[t]:
# the backward SSM of BiGS on the un-flipped sequence (J T J = T^T for a Toeplitz T).


def resolve_conv_impl(impl: str, L: int, device_type: str = "cuda") -> str:
    """auto: the Toeplitz GEMM up to AUTO_TOEPLITZ_MAX_LEN[device type] positions, the FFT beyond."""
    if impl == "auto":
        return "toeplitz" if L <= AUTO_TOEPLITZ_MAX_LEN.get(device_type, AUTO_TOEPLITZ_MAX_LEN["cuda"]) else "fft"
    return impl


def toeplitz_matrix(K: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """T (L, L) lower triangular, T[t, s] = K[t - s] (s <= t), plus D on the diagonal."""
    L = K.shape[0]
    Kp = torch.cat([K.new_zeros(L - 1), K])  # (2L-1,) Kp[L-1+j] = K[j], zeros for j < 0
    idx = torch.arange(L, device=K.device)
    T = Kp[(L - 1) + idx[:, None] - idx[None, :]]  # (L L) constant gather index: XLA-friendly
    return T + torch.diag(D.expand(L))  # (L L)


def conv_toeplitz(u, K, D, reverse=False):
    """One GEMM: (L, L) @ (L, B*H). Exact; faster than FFT for short L (REFERENCE.md §4)."""
    L = u.shape[0]
    T = toeplitz_matrix(K, D)  # (L L)
    if reverse:
        T = T.t()  # (L L) upper triangular: anti-causal
    return (T @ u.reshape(L, -1)).reshape(u.shape)  # (L B H)


def conv_fft(u, K, D, reverse=False):
    """rfft/irfft at length 2L (no wrap-around), as the original computes it."""
    L = u.shape[0]
    if reverse:
        u = u.flip(0)
    k_f = torch.fft.rfft(K, n=2 * L)  # (L+1,) complex
    u_f = torch.fft.rfft(u, n=2 * L, dim=0)  # (L+1 B H) complex
    y = torch.fft.irfft(u_f * k_f.reshape(-1, *[1] * (u.dim() - 1)), n=2 * L, dim=0)[:L]  # (L B H)
    y = y + D * u  # (L B H)
    return y.flip(0) if reverse else y


def conv_direct(u, K, D, reverse=False):
    """Slow obviously-correct reference: the O(L^2) double sum, one output step at a time."""
    L = u.shape[0]
    if reverse:
        u = u.flip(0)
    y = torch.stack([sum(K[t - s] * u[s] for s in range(t + 1)) + D * u[t] for t in range(L)])  # (L B H)
    return y.flip(0) if reverse else y


_CONVS = {"toeplitz": conv_toeplitz, "fft": conv_fft, "direct": conv_direct}


def ssm_conv(u, K, D, impl="auto", reverse=False):
    """Convolution in fp32 (or fp64) even under bf16/fp16 autocast; u (L, ...) -> (L, ...).
    On CUDA with TF32 on (training's default, bigs/train/runtime.py) the Toeplitz GEMM takes TF32 inputs."""
    f = torch.promote_types(u.dtype, torch.float32)
    with torch.autocast(device_type=u.device.type, enabled=False):
        return _CONVS[resolve_conv_impl(impl, u.shape[0], u.device.type)](u.to(f), K.to(f), D.to(f), reverse)


# ------------------------------------------------------------------------------------------------
# Modules (attribute names = published state-dict names)


def _set_optim(p: nn.Parameter, config) -> None:
    """Attach optimizer exceptions to the parameter itself (state-spaces s4d convention)."""
    optim = {}
    if config.ssm_lr_multiplier != 1.0:
        optim["lr_multiplier"] = float(config.ssm_lr_multiplier)
    if not config.ssm_weight_decay:
        optim["weight_decay"] = 0.0
    if optim:
        p._optim = optim


class S4DKernel(nn.Module):
    """Parameters A_re, A_im (N,), C (N, 2), log_step (1,); forward(L) -> K (L,) fp32."""

    OPTIM_PARAMS = ("A_re", "A_im", "log_step")  # the Flax `lr` dict

    def __init__(self, config):
        super().__init__()
        N = config.num_ssm
        self.A_re = nn.Parameter(torch.empty(N))
        self.A_im = nn.Parameter(torch.empty(N))
        self.C = nn.Parameter(torch.empty(N, 2))
        self.log_step = nn.Parameter(torch.empty(1))
        self.reset_parameters(config)
        for name in self.OPTIM_PARAMS:
            _set_optim(getattr(self, name), config)

    def initial_values(self, config) -> dict:
        A_re, A_im = init_A(config.num_ssm, config.scaling)
        return {
            "A_re": A_re,
            "A_im": A_im,
            "C": torch.randn(config.num_ssm, 2) * math.sqrt(0.5),  # C ~ N(0, 1/2) per real/imag part
            "log_step": torch.empty(1).uniform_(math.log(0.01), math.log(1.0)),  # dt in [0.01, 1]
        }

    def reset_parameters(self, config) -> None:
        with torch.no_grad():
            for name, value in self.initial_values(config).items():
                getattr(self, name).copy_(value)

    def forward(self, L: int) -> torch.Tensor:
        with torch.autocast(device_type=self.A_re.device.type, enabled=False):
            return s4d_kernel(self.A_re, self.A_im, self.C, self.log_step, L)  # (L,)


class S4D(nn.Module):
    """One SSM direction: y = K * u + D u with a kernel shared across the H channels."""

    def __init__(self, config):
        super().__init__()
        self.D = nn.Parameter(torch.ones(1))  # D = 1 (Flax; the port draws randn)
        self.kernel = S4DKernel(config)
        self.conv_impl = config.conv_impl

    def forward(self, u: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        K = self.kernel(u.shape[0])  # (L,)
        return ssm_conv(u, K, self.D, self.conv_impl, reverse)  # (L B H) fp32


class BiGSLayer(nn.Module):
    """One BiGS block on x (L, B, H), REFERENCE.md §2:

        Z  = LN(X);  V = gelu(Z Wv);  Uf = gelu(Z Wuf);  Ub = gelu(flip(Z) Wub)
        G  = (SSM_f(Uf) Wucf) * flip(SSM_b(Ub) Wucb);   out = X + (gelu(G Wol) * V) Wo

    Computed without flips: flip(Z) W = flip(Z W), and flip(SSM_b(flip(u))) is the anti-causal
    convolution (conv reverse=True), so Ub' = gelu(Z Wub) = flip(Ub) feeds SSM_b(reverse=True) and
    its output is already flip(SSM_b(Ub)). Fusing Wv, Wuf, Wub (same input Z) into one GEMM was
    measured on CPU at H 256 and 1024 (B 8, L 128, fwd+bwd of a layer): within 2 %, so not done.
    """

    def __init__(self, config):
        super().__init__()
        H, I = config.hidden_size, config.intermediate_size
        self.pre_norm = config.pre_norm
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.fs4 = S4D(config)
        self.bs4 = S4D(config)
        self.dv = nn.Linear(H, I)
        self.du_forward = nn.Linear(H, H)
        self.du_backward = nn.Linear(H, H)
        self.duc_forward = nn.Linear(H, H)
        self.duc_backward = nn.Linear(H, H)
        self.dol = nn.Linear(H, I)
        self.do = nn.Linear(I, H)

    def mix(self, z: torch.Tensor) -> torch.Tensor:
        """The gated bidirectional SSM block f(Z), z (L, B, H) -> (L, B, H)."""
        v = F.gelu(self.dv(z))  # (L B I)
        u_f = F.gelu(self.du_forward(z))  # (L B H)
        u_b = F.gelu(self.du_backward(z))  # (L B H) = flip(Ub): flip(Z) W = flip(Z W)
        y_f = self.fs4(u_f)  # (L B H) causal: y_f[t] sees z[<=t]
        y_b = self.bs4(u_b, reverse=True)  # (L B H) anti-causal: y_b[t] sees z[>=t]
        g = self.duc_forward(y_f) * self.duc_backward(y_b)  # (L B H) gate; both already in order
        return self.do(F.gelu(self.dol(g)) * v)  # (L B H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:  # the published models; the PyTorch port knows only this
            return x + self.mix(self.LayerNorm(x))
        return self.LayerNorm(x + self.mix(x))  # Flax post-norm variant


class SharedDropout(nn.Dropout):
    """Dropout with one (L, H) mask for the whole batch (B, L, H): what the original gets by applying
    the model with jax.vmap over the batch and a single dropout RNG (REFERENCE.md §5a)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty(x.shape[1:], dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)  # (L H)
        return x * keep / (1 - self.p)  # flax: where(keep, x / keep_prob, 0)


class BiGSEmbeddings(nn.Module):
    """word + position + token type -> LayerNorm -> dropout (the model's only dropout in pretraining).

    The word table has no padding_idx: as the original's nn.Embed, row 0 ([PAD]) starts random and
    trains from both the input side and the tied decoder (REFERENCE.md §5b).
    """

    def __init__(self, config):
        super().__init__()
        H = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, H)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, H)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, H)
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        shared = getattr(config, "dropout_mask", "shared") == "shared"
        self.dropout = (SharedDropout if shared else nn.Dropout)(config.hidden_dropout_prob)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (B L H)
        B, L = x.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(L, device=x.device)[None]  # (1 L)
        if token_type_ids is None:
            token_type_ids = torch.zeros(L, dtype=torch.long, device=x.device)[None]  # (1 L)
        x = x + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))  # (B L H)


class BiGSEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([BiGSLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = config.gradient_checkpointing  # also set by HF's *_enable()

    def forward(self, x: torch.Tensor, output_hidden_states: bool = False):
        """x (B, L, H) -> (B, L, H). No attention mask: pads run through the SSMs (REFERENCE §2)."""
        x = x.transpose(0, 1).contiguous()  # (L B H) sequence-first, see module docstring
        states = []
        for layer in self.layer:
            if output_hidden_states:
                states.append(x.transpose(0, 1))
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        x = x.transpose(0, 1)  # (B L H)
        return x, (tuple(states) + (x,) if output_hidden_states else None)


class BiGSPooler(nn.Module):
    """Mean over non-pad positions ("non_padding_mean") or all positions ("mean") -> dense -> tanh."""

    def __init__(self, config):
        super().__init__()
        self.pooler_type = config.pooler_type
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.pooler_type == "mean" or attention_mask is None:
            pooled = h.mean(1)  # (B H)
        else:
            m = attention_mask.to(h.dtype).unsqueeze(-1)  # (B L 1)
            pooled = (h * m).sum(1) / m.sum(1)  # (B H)
        return torch.tanh(self.dense(pooled))  # (B H)


class BiGSPredictionHeadTransform(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dense.lecun_normal_init = True  # flax nn.Dense default in the original, not N(0, 0.02)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h):
        return self.LayerNorm(self.act(self.dense(h)))


class BiGSLMPredictionHead(nn.Module):
    """transform -> decoder (weight tied to the word embeddings) + bias (V,)."""

    def __init__(self, config):
        super().__init__()
        self.transform = BiGSPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # published checkpoints store both names for the same tensor

    def forward(self, h):
        return self.decoder(self.transform(h))  # (..., V)


class BiGSOnlyMLMHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BiGSLMPredictionHead(config)

    def forward(self, h):
        return self.predictions(h)


# ------------------------------------------------------------------------------------------------
# Hugging Face classes


def lecun_normal_(w: torch.Tensor) -> torch.Tensor:
    """jax.nn.initializers.lecun_normal for a torch (out, in) weight: variance 1/fan_in, from a normal
    truncated at ±2 standard deviations whose std is corrected by 0.8796 (the truncated normal's)."""
    s = (1.0 / w.shape[1]) ** 0.5 / 0.87962566103423978
    return nn.init.trunc_normal_(w, 0.0, s, -2 * s, 2 * s)


def _guarded(t: torch.Tensor, fill) -> None:
    """Initialise `t` in place unless from_pretrained already loaded it (transformers 5 flag)."""
    if not getattr(t, "_is_hf_initialized", False):
        with torch.no_grad():
            fill(t)


class BiGSPreTrainedModel(PreTrainedModel):
    config_class = BiGSConfig
    base_model_prefix = "bigs"
    supports_gradient_checkpointing = True
    # the port registered position_ids as a persistent buffer; we compute them
    _keys_to_ignore_on_load_unexpected = [r"position_ids"]

    def _init_weights(self, module):
        """Dense and embeddings N(0, initializer_range) (the MLM transform: LeCun normal), biases 0,
        LayerNorm 1/0, S4D as Flax."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            _guarded(
                module.weight,
                lecun_normal_ if getattr(module, "lecun_normal_init", False) else lambda t: t.normal_(0.0, std),
            )
            if module.bias is not None:
                _guarded(module.bias, lambda t: t.zero_())
        elif isinstance(module, nn.Embedding):
            _guarded(module.weight, lambda t: t.normal_(0.0, std))
        elif isinstance(module, nn.LayerNorm):
            _guarded(module.weight, lambda t: t.fill_(1.0))
            _guarded(module.bias, lambda t: t.zero_())
        elif isinstance(module, S4DKernel):
            for name, value in module.initial_values(self.config).items():
                _guarded(getattr(module, name), lambda t, v=value: t.copy_(v))
        elif isinstance(module, S4D):
            _guarded(module.D, lambda t: t.fill_(1.0))
        elif isinstance(module, BiGSLMPredictionHead):
            _guarded(module.bias, lambda t: t.zero_())

    def optim_hints(self) -> dict[str, dict]:
        """{parameter name: {"lr_multiplier": x, "weight_decay": 0.0}} for the SSM exceptions."""
        hints = {}
        for mname, m in self.named_modules():
            if isinstance(m, S4DKernel):
                for pname in S4DKernel.OPTIM_PARAMS:
                    p = getattr(m, pname)
                    _set_optim(p, self.config)  # re-attach in case the Parameter was re-created
                    if hasattr(p, "_optim"):
                        hints[f"{mname}.{pname}"] = dict(p._optim)
        return hints

    def flops_per_token(self, seq_len: int, mlm_fraction: float | None = None, training: bool = True) -> float:
        return self.config.flops_per_token(seq_len, mlm_fraction, training)


class BiGSModel(BiGSPreTrainedModel):
    """Embeddings + encoder (+ pooler, whose weights exist in every published checkpoint)."""

    def __init__(self, config, add_pooling_layer=False):
        super().__init__(config)
        self.add_pooling_layer = add_pooling_layer
        self.embeddings = BiGSEmbeddings(config)
        self.encoder = BiGSEncoder(config)
        self.pooler = BiGSPooler(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        """attention_mask is used by the pooler only (the original encoder ignores it)."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B L H)
        h, states = self.encoder(x, output_hidden_states)  # (B L H)
        pooled = self.pooler(h, attention_mask) if self.add_pooling_layer else None  # (B H)
        if not return_dict:
            return tuple(v for v in (h, pooled, states) if v is not None)
        return BaseModelOutputWithPooling(last_hidden_state=h, pooler_output=pooled, hidden_states=states)


class BiGSForMaskedLM(BiGSPreTrainedModel):
    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bigs.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config):
        super().__init__(config)
        self.bigs = BiGSModel(config, add_pooling_layer=False)
        self.cls = BiGSOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        masked_positions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        """labels (B, L) ids / -100; or masked_positions (B, P) + labels (B, P) for fixed shapes.

        logits: (n_labelled, V) with labels and mlm_head "masked"; (B, P, V) with masked_positions;
        else (B, L, V). loss: mean cross-entropy over labels != -100. See the module docstring.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.bigs(
            input_ids,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        h = out.last_hidden_state  # (B L H)
        if masked_positions is not None:  # fixed-shape gather (XLA)
            assert labels is not None and labels.shape == masked_positions.shape, (
                "masked_positions (B, P) needs labels (B, P): the ids at those positions, -100 in padding slots"
            )
            idx = masked_positions.long().unsqueeze(-1).expand(-1, -1, h.shape[-1])  # (B P H)
            logits = self.cls(h.gather(1, idx))  # (B P V)
        elif labels is not None and self.config.mlm_head == "masked":
            selected = labels != -100  # (B L) data-dependent count n
            logits = self.cls(h[selected])  # (n V) row-major order of `selected`
            labels = labels[selected]  # (n,)
        else:
            logits = self.cls(h)  # (B L V)
        loss = None
        if labels is not None:  # fp32 loss, mean over labels != -100
            flat = logits.reshape(-1, logits.shape[-1]).float()  # (rows V)
            loss = F.cross_entropy(flat, labels.reshape(-1), ignore_index=-100)
        if not return_dict:
            rest = (logits,) + ((out.hidden_states,) if out.hidden_states is not None else ())
            return ((loss,) + rest) if loss is not None else rest
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class BiGSForSequenceClassification(BiGSPreTrainedModel):
    """Pooled (masked mean -> dense -> tanh) -> dropout -> linear; regression when num_labels == 1."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bigs = BiGSModel(config, add_pooling_layer=True)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.bigs(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(out.pooler_output))  # (B num_labels)
        loss = None
        if labels is not None:
            problem = self.config.problem_type
            if problem is None:
                if self.num_labels == 1:
                    problem = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    problem = "single_label_classification"
                else:
                    problem = "multi_label_classification"
            if problem == "regression":
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.squeeze(-1).float())
            elif problem == "single_label_classification":
                loss = F.cross_entropy(logits.float(), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        if not return_dict:
            rest = (logits,) + ((out.hidden_states,) if out.hidden_states is not None else ())
            return ((loss,) + rest) if loss is not None else rest
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


# Register with the Auto classes (importing bigs.model is enough; exist_ok for re-imports).
AutoConfig.register("BiGS", BiGSConfig, exist_ok=True)
AutoModel.register(BiGSConfig, BiGSModel, exist_ok=True)
AutoModelForMaskedLM.register(BiGSConfig, BiGSForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(BiGSConfig, BiGSForSequenceClassification, exist_ok=True)
