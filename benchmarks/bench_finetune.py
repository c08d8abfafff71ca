"""GLUE fine-tuning throughput, BiGS vs BERT at equal size, and the projected wall time of the full
GLUE suite at the original's settings; prints figures, asserts nothing.

    python benchmarks/bench_finetune.py                                  # tiny + base on CPU (or the GPU)
    python benchmarks/bench_finetune.py --sizes paper --steps 20         # on a GPU (bf16)
    python benchmarks/bench_finetune.py --smoke                          # tiny, a few steps (CI)

One fine-tuning step = bigs.finetune's, bigs.train.step.train_step: forward + backward of the
sequence-classification model (BiGS with its non-pad-mean pooler; BERT with its [CLS] pooler),
grad-norm clip 1.0, AdamW with HF's settings over the trainer's groups, on
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

import torch
from bench_pretrain import measure  # benchmarks/ is this script's sys.path[0]

from bigs.train.metrics import human_time
from bigs.train.optim import build_optimizer
from bigs.train.runtime import Runtime, setup
from bigs.train.step import train_step

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


def bench(kind: str, size: str, batch: int, seq: int, steps: int, rt: Runtime) -> dict:
    torch.manual_seed(0)
    model = build(kind, size, seq).to(rt.device)
    opt = build_optimizer(model, lr=2e-5, weight_decay=0.0)  # bigs.finetune's: HF's AdamW defaults
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[: batch // 2, seq // 2 :] = 0  # half the rows padded: BiGS's pooler sees it, the SSMs don't
    labels = torch.randint(0, 2, (batch,), generator=g)
    micro = [rt.to_device({"input_ids": ids, "attention_mask": mask, "labels": labels})]

    def fine_tune():
        return train_step(model, micro, opt, rt=rt, weights=[1.0], max_grad_norm=1.0)[0]

    @torch.no_grad()
    def predict():
        with rt.autocast():
            return model(input_ids=micro[0]["input_ids"], attention_mask=micro[0]["attention_mask"]).logits.sum()

    rates = {}
    for name, fn in (("train", fine_tune), ("eval", predict)):
        model.train(name == "train")
        rates[name] = batch / measure(fn, steps, rt.device)["s_per_step"]
    encoder = sum(p.numel() for n, p in model.named_parameters() if ".layer." in n)
    return {
        "train": rates["train"],
        "eval": rates["eval"],
        "encoder_params": encoder,
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=list(SIZES))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--smoke", action="store_true", help="tiny size, batch 4 × L 16, 3 steps (seconds)")
    args = p.parse_args()
    if args.smoke:
        args.sizes, args.batch, args.seq, args.steps = ["tiny"], 4, 16, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    rt = setup(args.device)  # bf16 autocast on CUDA, as bigs.finetune
    where = torch.cuda.get_device_name(rt.device) if rt.kind == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {where}; batch {args.batch} x L {args.seq}; {args.steps} timed steps; "
        f"{'bf16 autocast' if rt.bf16 else 'fp32'}"
    )
    print(
        f"{'size':6} {'model':5} {'encoder params':>15} {'train ex/s':>11} {'eval ex/s':>10} {'GLUE suite (3 epochs, 1 device)':>32}"
    )
    for size in args.sizes:
        for kind in ("bigs", "bert"):
            r = bench(kind, size, args.batch, args.seq, args.steps, rt)
            per_task = {t: EPOCHS * TRAIN[t] / r["train"] + DEV[t] / r["eval"] for t in TRAIN}  # dev once, at the end
            print(
                f"{size:6} {kind:5} {r['encoder_params']:>15,} {r['train']:>11.1f} {r['eval']:>10.1f} "
                f"{human_time(sum(per_task.values())):>32}"
            )
            print("       per task: " + ", ".join(f"{t} {human_time(s)}" for t, s in per_task.items()))


if __name__ == "__main__":
    main()
