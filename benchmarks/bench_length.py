"""Speed and memory against sequence length: BiGS vs BERT of the same size, the training step
(bigs.train.step.train_step) at L 128 … 4096 with the same tokens per step; prints figures, asserts nothing.

    python benchmarks/bench_length.py                 # CPU: H 256, I 512, 2 layers, 4096 tokens per step
    python benchmarks/bench_length.py --size paper    # a GPU: the paper's 23 layers, 131 × 128 tokens per step
    python benchmarks/bench_length.py --smoke         # seconds (CI)

For each L: tokens/s and peak memory of a training step (forward, backward, AdamW) of BiGS with
the convolution `auto` picks (and, with --conv both, forced Toeplitz and FFT: where the switch
belongs) and of BERT with SDPA attention at the same width, depth and tokens per step. Peak memory:
torch.cuda.max_memory_allocated on a GPU; on the CPU the peak RSS of a fresh process per
measurement (so one length's allocations do not hide the next). The BiGS/BERT ratio and BiGS's
tokens/s relative to L 128 close the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

SIZES = {  # trainer flags; tokens per step
    "cpu": (["--n_layers", "2", "--hidden_size", "256", "--intermediate_size", "512", "--num_ssm", "64"], 4096),
    "paper": ([], 131 * 128),
    "smoke": (["--n_layers", "1", "--hidden_size", "64", "--intermediate_size", "128", "--num_ssm", "16"], 512),
}
LENGTHS = (128, 512, 1024, 2048, 4096)
BERT_FLAGS = ["--model_type", "bert"]  # same layers, H and I: build_model gives H/64 heads, SDPA


def measure(model_kind: str, conv: str, L: int, size: str, steps: int) -> dict:
    """One (model, conv, L) in this process: tokens/s of the trainer's step, its peak memory."""
    import resource
    import tempfile

    from bench_pretrain import measure as time_it
    from bench_pretrain import synthetic_shard, trainer_args, trainer_step

    from bigs.data.stream import TrainStream
    from bigs.pretrain import build_model, mlm_gather
    from bigs.train.runtime import setup

    flags, tokens = SIZES[size]
    B = max(1, tokens // L)
    P = max(1, round(0.15 * L))
    args = trainer_args(
        *flags,
        *(BERT_FLAGS if model_kind == "bert" else ["--conv_impl", conv]),
        "--max_seq_length", str(L), "--max_predictions_per_seq", str(P), "--per_device_train_batch_size", str(B),
    )  # fmt: skip
    rt = setup("auto")
    torch.manual_seed(0)
    model = build_model(args, rt.kind).to(rt.device)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "train_shard_0.hdf5"
        synthetic_shard(path, 4 * B, L, P)
        stream = TrainStream([str(path)], per_device=B, fixed_shape=mlm_gather(args, rt.kind) == "positions")
        batches = [rt.to_device(b) for _, b in zip(range(4), stream)]
    cycle = (batches[i % 4] for i in range(10**9))
    if rt.kind == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = time_it(trainer_step(args, rt, cycle, model=model), steps, rt.device)
    peak = (
        torch.cuda.max_memory_allocated(rt.device) / 2**20
        if rt.kind == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    )
    from bigs.model import resolve_conv_impl

    return {
        "model": model_kind,
        "conv": resolve_conv_impl(conv, L, rt.kind) if model_kind == "bigs" else "attention",
        "L": L,
        "batch": B,
        "tokens_per_s": B * L / r["s_per_step"],
        "peak_mib": peak,
        "device": torch.cuda.get_device_name(rt.device) if rt.kind == "cuda" else f"cpu × {torch.get_num_threads()}",
    }


def in_child(model_kind: str, conv: str, L: int, size: str, steps: int) -> dict:
    """measure() in a fresh process (its own peak RSS)."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import bench_length as b; "
        "print('RESULT', json.dumps(b.measure(*sys.argv[2:4], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))))"
    )
    here = str(Path(__file__).resolve().parent)
    try:
        p = subprocess.run(
            [sys.executable, "-c", code, here, model_kind, conv, str(L), size, str(steps)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except subprocess.TimeoutExpired:
        return {"model": model_kind, "conv": conv, "L": L, "error": "timed out after 1800 s"}
    if p.returncode != 0:  # killed for memory: no stderr at all
        why = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:200]
        return {"model": model_kind, "conv": conv, "L": L, "error": why}
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])


def table(rows: list[dict]) -> str:
    """One row per L: BiGS (the conv auto picks) and BERT, their ratio, BiGS against its L 128 speed,
    and with --conv both the forced Toeplitz / FFT speeds."""
    by = {(r["model"], r.get("picked", False), r["conv"], r["L"]): r for r in rows if "tokens_per_s" in r}
    auto = {k[3]: r for k, r in by.items() if k[0] == "bigs" and k[1]}
    forced = {(k[2], k[3]): r["tokens_per_s"] for k, r in by.items() if k[0] == "bigs" and not k[1]}
    bert = {k[3]: r for k, r in by.items() if k[0] == "bert"}
    first = auto[min(auto)]["tokens_per_s"] if auto else None
    head = ["L", "batch", "BiGS conv (auto)", "BiGS tokens/s", "vs first L", "BiGS peak MiB", "BERT tokens/s",
            "BERT peak MiB", "BiGS / BERT"] + (["Toeplitz tokens/s", "FFT tokens/s"] if forced else [])  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for L in sorted({r["L"] for r in rows}):
        b, t = auto.get(L), bert.get(L)
        cells = [
            L,
            (b or t or {}).get("batch", ""),
            b["conv"] if b else "–",
            f"{b['tokens_per_s']:,.0f}" if b else "–",
            f"{b['tokens_per_s'] / first:.2f}" if b and first else "–",
            f"{b['peak_mib']:,.0f}" if b else "–",
            f"{t['tokens_per_s']:,.0f}" if t else "–",
            f"{t['peak_mib']:,.0f}" if t else "–",
            f"{b['tokens_per_s'] / t['tokens_per_s']:.2f}×" if b and t else "–",
        ]
        if forced:
            cells += [f"{forced[(c, L)]:,.0f}" if (c, L) in forced else "–" for c in ("toeplitz", "fft")]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default=None, choices=list(SIZES), help="default: paper on a GPU, cpu otherwise")
    p.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--conv", default="auto", choices=["auto", "both"], help="both: also forced Toeplitz and FFT")
    p.add_argument("--smoke", action="store_true", help="tiny size, L 64 and 256, one step (CI)")
    a = p.parse_args()
    if a.smoke:
        a.size, a.lengths, a.steps = "smoke", [64, 256], 1
    size = a.size or ("paper" if torch.cuda.is_available() else "cpu")
    flags, tokens = SIZES[size]
    print(
        f"size {size} ({' '.join(flags) or 'the paper: 23 layers, H 1024, I 3072'}), {tokens} tokens per step, {a.steps} timed steps"
    )
    rows = []
    for L in a.lengths:
        convs = ["auto"] + (["toeplitz", "fft"] if a.conv == "both" else [])
        for conv in convs:
            r = in_child("bigs", conv, L, size, a.steps)
            r["picked"] = conv == "auto"
            rows.append(r)
            print(
                f"  BiGS conv {conv:8} L {L:5}: "
                + (r.get("error") or f"{r['tokens_per_s']:,.0f} tokens/s ({r['conv']}), peak {r['peak_mib']:,.0f} MiB"),
                flush=True,
            )
        r = in_child("bert", "attention", L, size, a.steps)
        rows.append(r)
        print(
            f"  BERT               L {L:5}: "
            + (r.get("error") or f"{r['tokens_per_s']:,.0f} tokens/s, peak {r['peak_mib']:,.0f} MiB"),
            flush=True,
        )
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
