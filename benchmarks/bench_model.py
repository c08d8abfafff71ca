"""CPU benchmark of bigs.model: tokens/s of a training step, and the
Toeplitz-vs-FFT sweep that sets bigs.model.AUTO_TOEPLITZ_MAX_LEN.

Run:  nice python benchmarks/bench_model.py [--reference-port PATH] [--steps 5] [--threads 2]
      nice python benchmarks/bench_model.py --only sweep        # just the convolution sweep
      python benchmarks/bench_model.py --smoke                  # seconds: every code path at tiny sizes (CI)
PATH is a checkout of the original release (github.com/jxiw/BiGS, the directory holding BiGS/);
its BiGS.modeling_bigs is imported as-is (two imports it no longer needs under transformers 5 are
stubbed if missing). Nothing of it is vendored here.

Step = forward + backward, fp32, batch 8 x length 128, labels on 15 % of the positions. Models are
timed round-robin (one step of each in turn) so that load from other processes hits all alike;
the figure is the median step time (on a shared machine `--threads 1` gives the steadiest figures).
BiGS uses its defaults (conv auto, masked-only MLM head);
BertForMaskedLM and the original port compute their MLM head at every position, as they do.

Last run (2026-11-28, AMD EPYC, --threads 1, machine shared with other jobs), tokens/s:
  small  H 256/I 768/4 layers : bigs 1174, bigs(full head) 415, bert 427, original port 408
                                -> 2.75x bert, 2.88x original port
  large  H 1024/I 3072/2 layers: bigs 271, bigs(full head) 137, bert 153, original port 144
                                -> 1.77x bert, 1.88x original port
  sweep  fft/toeplitz time at L 64..2048: 9.7, 3.8, 2.6, 1.7, 1.25, 0.86 -> AUTO_TOEPLITZ_MAX_LEN 1024
"""

import argparse
import importlib
import statistics
import sys
import time
import types

import torch
from transformers import BertConfig, BertForMaskedLM

from bigs.model import AUTO_TOEPLITZ_MAX_LEN, BiGSConfig, BiGSForMaskedLM, conv_fft, conv_toeplitz

SIZES = {"small": (256, 768, 4), "large": (1024, 3072, 2)}  # hidden, intermediate, layers


def make_batch(B, L, V, frac=0.15, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, V, (B, L), generator=g)
    labels = torch.full((B, L), -100)
    pick = torch.rand(B, L, generator=g) < frac
    labels[pick] = ids[pick]
    return ids, torch.ones_like(ids), torch.zeros_like(ids), labels


def load_port(path):
    """Import BiGS.modeling_bigs from a user's checkout of the original release."""
    sys.path.insert(0, path)
    import transformers.modeling_utils as mu

    if not hasattr(mu, "SequenceSummary"):  # removed in transformers 5; the port never uses it
        mu.SequenceSummary = object
    try:
        import einops  # noqa: F401  (the port imports einops.repeat for its pykeops path only)
    except ImportError:
        sys.modules["einops"] = types.SimpleNamespace(repeat=None)
    mod = importlib.import_module("BiGS.modeling_bigs")
    cfg = importlib.import_module("BiGS.configuration_bigs")
    return mod.BiGSForMaskedLM, cfg.BiGSConfig


def time_round_robin(models, batch, steps, warmup=1):
    """{name: median seconds per fwd+bwd step}, one step of each model in turn."""
    ids, mask, tt, labels = batch
    times = {name: [] for name in models}
    for i in range(warmup + steps):
        for name, model in models.items():
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            loss = model(input_ids=ids, attention_mask=mask, token_type_ids=tt, labels=labels).loss
            loss.backward()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_models(args, port):
    B, L = args.batch, args.seq_len
    for size in args.sizes:
        H, I, n = SIZES[size]
        common = dict(
            vocab_size=30522,
            hidden_size=H,
            intermediate_size=I,
            num_hidden_layers=n,
            max_position_embeddings=512,
            hidden_dropout_prob=0.1,
        )
        models = {
            "bigs": BiGSForMaskedLM(BiGSConfig(**common)),
            "bigs(full head)": BiGSForMaskedLM(BiGSConfig(mlm_head="full", **common)),
            "bert": BertForMaskedLM(
                BertConfig(num_attention_heads=H // 64, attention_probs_dropout_prob=0.1, **common)
            ),
        }
        if port is not None:
            PortMLM, PortConfig = port
            models["original port"] = PortMLM(PortConfig(**common))
        for m in models.values():
            m.train()
        med = time_round_robin(models, make_batch(B, L, 30522), args.steps)
        print(
            f"\n== {size}: H {H} / I {I} / {n} layers, batch {B} x L {L}, fp32 fwd+bwd, "
            f"{torch.get_num_threads()} threads, median of {args.steps} =="
        )
        for name, t in med.items():
            line = f"{name:>16}: {t * 1e3:8.1f} ms/step  {B * L / t:9.0f} tokens/s"
            ratios = [
                f"{med[other] / t:.2f}x vs {other}"
                for other in ("bert", "original port")
                if other in med and other != name and name.startswith("bigs")
            ]
            print(line + ("   " + ", ".join(ratios) if ratios else ""))


def bench_sweep(args):
    """Both directions' convolutions, fwd+bwd, (L, B, H) fp32: Toeplitz GEMM vs rfft/irfft."""
    B, H = args.batch, args.sweep_hidden
    print(
        f"\n== conv sweep: B {B} x H {H}, fp32, fwd+bwd of a causal + an anti-causal conv "
        f"(current AUTO_TOEPLITZ_MAX_LEN = {AUTO_TOEPLITZ_MAX_LEN['cpu']} on the CPU) =="
    )
    for L in args.sweep_lengths:
        K = torch.randn(L, requires_grad=True)
        D = torch.randn(1, requires_grad=True)
        u = torch.randn(L, B, H, requires_grad=True)
        res = {}
        for _ in range(args.steps + 1):
            for name, conv in (("toeplitz", conv_toeplitz), ("fft", conv_fft)):
                t0 = time.perf_counter()
                (conv(u, K, D) + conv(u, K, D, reverse=True)).sum().backward()
                res.setdefault(name, []).append(time.perf_counter() - t0)
        t_toe, t_fft = (statistics.median(res[k][1:]) for k in ("toeplitz", "fft"))
        print(f"L {L:5d}: toeplitz {t_toe * 1e3:8.2f} ms  fft {t_fft * 1e3:8.2f} ms  fft/toeplitz {t_fft / t_toe:5.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-port", help="checkout of github.com/jxiw/BiGS (directory holding BiGS/)")
    ap.add_argument("--only", choices=["models", "sweep"], help="run one part only")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--sweep-hidden", type=int, default=256)
    ap.add_argument("--sweep-lengths", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    ap.add_argument("--smoke", action="store_true", help="the small size at batch 2 × 32, one step, a short sweep (CI)")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.batch, args.seq_len, args.steps = ["small"], 2, 32, 1
        args.sweep_hidden, args.sweep_lengths = 64, [64, 128]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    port = load_port(args.reference_port) if args.reference_port else None
    if args.only != "sweep":
        bench_models(args, port)
    if args.only != "models":
        bench_sweep(args)


if __name__ == "__main__":
    main()
