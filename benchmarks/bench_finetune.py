"""GLUE fine-tuning throughput, BiGS vs BERT at equal size, and the projected wall time of the full
GLUE suite at the original's settings; prints figures, asserts nothing.

    python benchmarks/bench_finetune.py                                  # tiny + base on CPU (or the GPU)
    python benchmarks/bench_finetune.py --sizes paper --steps 20         # on a GPU (bf16)
    python benchmarks/bench_finetune.py --sizes tiny --steps 3 --batch 4 --seq 16   # smoke test

One fine-tuning step = bigs.finetune's: forward + backward of the sequence-classification model
(BiGS with its non-pad-mean pooler; BERT with its [CLS] pooler), grad-norm clip, AdamW, on
padded batches of `--batch` x `--seq` (the original: 16 x 128, REFERENCE.md §5), bf16 autocast
on CUDA. "Equal size": same layers and hidden size, BERT's intermediate size 1.5x BiGS's so the
encoder weights match (per layer BiGS 4H^2 + 3HI, BERT 4H^2 + 2HI'; presets/compare.yaml).

The projection: GLUE train sizes x 3 epochs / measured examples/s, plus the dev sets at the
measured eval rate, per task and in total, for ONE device of the kind measured (the suite's jobs
are independent: N devices divide it by about N). MNLI-start tasks (MRPC, STS-B, RTE) cost the
same as from scratch.
"""

from __future__ import annotations

import argparse
import time

import torch

from bigs.pretrain import param_groups

SIZES = {  # name: (layers, hidden, BiGS intermediate)
    "tiny": (2, 128, 256),
    "base": (12, 768, 2048),
    "paper": (23, 1024, 3072),
}
# GLUE train / dev sizes (the tasks' own counts; MNLI dev = matched + mismatched).
TRAIN = {
    "cola": 8551,
    "sst2": 67349,
    "mrpc": 3668,
    "stsb": 5749,
    "qqp": 363846,
    "mnli": 392702,
    "qnli": 104743,
    "rte": 2490,
    "wnli": 635,
}
DEV = {
    "cola": 1043,
    "sst2": 872,
    "mrpc": 408,
    "stsb": 1500,
    "qqp": 40430,
    "mnli": 9815 + 9832,
    "qnli": 5463,
    "rte": 277,
    "wnli": 71,
}
EPOCHS = 3


def build(kind: str, size: str, seq: int):
    from transformers import BertConfig, BertForSequenceClassification

    from bigs.model import BiGSConfig, BiGSForSequenceClassification

    layers, H, I = SIZES[size]
    if kind == "bigs":
        return BiGSForSequenceClassification(
            BiGSConfig(
                hidden_size=H,
                num_hidden_layers=layers,
                intermediate_size=I,
                max_position_embeddings=max(seq, 128),
                num_labels=2,
            )
        )
    return BertForSequenceClassification(
        BertConfig(
            hidden_size=H,
            num_hidden_layers=layers,
            intermediate_size=I * 3 // 2,
            num_attention_heads=max(1, H // 64),
            num_labels=2,
            max_position_embeddings=max(seq, 512),
        )
    )


def bench(kind: str, size: str, batch: int, seq: int, steps: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build(kind, size, seq).to(device)
    opt = torch.optim.AdamW(param_groups(model, 0.0, verbose=False), lr=2e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g).to(device)
    mask = torch.ones_like(ids)
    mask[: batch // 2, seq // 2 :] = 0  # half the rows padded: BiGS's pooler sees it, the SSMs don't
    labels = torch.randint(0, 2, (batch,), generator=g).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step():
        with autocast:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def eval_step():
        with torch.no_grad(), autocast:
            model(input_ids=ids, attention_mask=mask)

    rates = {}
    for name, fn in (("train", train_step), ("eval", eval_step)):
        model.train(name == "train")
        for _ in range(2):  # warm-up
            fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        rates[name] = steps * batch / (time.perf_counter() - t0)
    encoder = sum(p.numel() for n, p in model.named_parameters() if ".layer." in n)
    return {
        "train": rates["train"],
        "eval": rates["eval"],
        "encoder_params": encoder,
        "params": sum(p.numel() for p in model.parameters()),
    }


def human(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else (f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=list(SIZES))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {where}; batch {args.batch} x L {args.seq}; {args.steps} timed steps; "
        f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}"
    )
    print(
        f"{'size':6} {'model':5} {'encoder params':>15} {'train ex/s':>11} {'eval ex/s':>10} {'GLUE suite (3 epochs, 1 device)':>32}"
    )
    for size in args.sizes:
        for kind in ("bigs", "bert"):
            r = bench(kind, size, args.batch, args.seq, args.steps, device)
            per_task = {t: EPOCHS * TRAIN[t] / r["train"] + DEV[t] / r["eval"] for t in TRAIN}  # dev once, at the end
            print(
                f"{size:6} {kind:5} {r['encoder_params']:>15,} {r['train']:>11.1f} {r['eval']:>10.1f} "
                f"{human(sum(per_task.values())):>32}"
            )
            print("       per task: " + ", ".join(f"{t} {human(s)}" for t, s in per_task.items()))


if __name__ == "__main__":
    main()
