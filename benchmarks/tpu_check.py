"""The first 15 minutes on a rented TPU VM: install, cores, a few real steps, a preemption and a resume.

    bash benchmarks/tpu_check.sh OUT_DIR            # on the TPU VM (PJRT_DEVICE=TPU): the paper's model
    bash benchmarks/tpu_check.sh --smoke OUT_DIR    # XLA:CPU with 2 devices, tiny sizes (the XLA lane runs it)

Writes OUT_DIR/tpu_check.{json,md} (also printed) with the sections install (torch, torch-xla,
PJRT_DEVICE), devices (how many, which), steps (the real `python -m bigs.pretrain --device xla` on
synthetic shards: tokens/s in all and per core, the compile count once warm) and resume (SIGTERM to
the launcher mid-run -> exit 3 and one checkpoint on every core's behalf -> the same command resumes
and finishes). Exit 1 when a section failed, so a broken VM is found in minutes, not after three days.
One deadline for the whole check (FULL 25 min, SMOKE 10): a child still running then is killed, process
group and all, and the JSON is rewritten after every section, so a hung VM still leaves what was found
and every run's output in OUT_DIR/logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import child  # benchmarks/ is this script's sys.path[0]
from bench_pretrain import synthetic_shard

REPO = Path(__file__).resolve().parents[1]
# The paper's model at the paper's per-core batch (8 cores × 131 = 1048 on a v3-8), L 128.
FULL = {"flags": [], "rows": 131 * 8, "steps": 40, "stop_after": 20, "total_s": 1500}
SMOKE = {
    "flags": ["--n_layers", "1", "--hidden_size", "32", "--intermediate_size", "48", "--num_ssm", "8",
              "--per_device_train_batch_size", "4", "--learning_rate", "3e-3"],
    "rows": 64, "steps": 12, "stop_after": 5, "total_s": 600,
}  # fmt: skip


def devices(deadline: float) -> dict:
    """In a child process (the XLA runtime must not start in the one that launches training)."""
    code = (
        "import json, torch_xla, torch_xla.runtime as xr, torch_xla.core.xla_model as xm; "
        "d = torch_xla.device(); print('RESULT', json.dumps({'count': xr.global_runtime_device_count(), "
        "'kind': xm.xla_device_hw(d), 'device_type': xr.device_type()}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=min(300, left(deadline)))
    if r.returncode != 0:
        raise RuntimeError(f"torch_xla cannot open its devices: {r.stderr.strip()[-1500:]}")
    return json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])


def left(deadline: float) -> float:
    return max(deadline - time.time(), 0.0)


def flags(plan: dict, data: Path, out: Path, steps: int) -> list[str]:
    return [
        *plan["flags"], "--device", "xla", "--dataset_path", str(data), "--output_dir", str(out),
        "--max_seq_length", "128", "--num_total_train_steps", str(steps), "--warmup_steps", "2",
        "--logging_steps", "1", "--save_steps", "100000", "--do_eval", "false",
    ]  # fmt: skip


PRETRAIN = [sys.executable, "-m", "bigs.pretrain"]


def pretrain(args: list[str], log: Path, deadline: float) -> str:
    """The real CLI to its end, its output in `log`; an error naming the exit code and the log otherwise."""
    code, text = child.run([*PRETRAIN, *args], log, left(deadline))
    if code != 0:
        why = "killed at the check's deadline" if code is None else f"exit {code}"
        raise RuntimeError(f"bigs.pretrain {why} (log {log.name}): {text.strip()[-1500:]}")
    return text


def records(out: Path) -> list[dict]:
    """The training lines logged so far: complete lines only (a running job may be mid-write)."""
    m = out / "metrics.jsonl"
    lines = m.read_text().split("\n")[:-1] if m.exists() else []  # the piece after the last newline: unfinished
    return [json.loads(ln) for ln in lines if '"train"' in ln]


def steps(plan: dict, data: Path, work: Path, logs: Path, world: int, deadline: float) -> dict:
    out = work / "steps"
    text = pretrain(flags(plan, data, out, plan["steps"]), logs / "steps.log", deadline)
    recs = records(out)
    warm = recs[len(recs) // 2 :]  # the second half: compiled, steady
    tps = sorted(x["tokens_per_s"] for x in warm)[len(warm) // 2]
    compiles = [x["xla_compiles"] for x in recs]
    return {
        "summary": next((ln for ln in text.splitlines() if ln.startswith("device xla")), ""),
        "tokens_per_s": tps,
        "tokens_per_s_per_core": tps / world,
        "first_loss": recs[0]["loss"],
        "last_loss": recs[-1]["loss"],
        "compiles": {"after_first_step": compiles[0], "at_half": compiles[len(compiles) // 2], "at_end": compiles[-1]},
        "pass": compiles[len(compiles) // 2] == compiles[-1] and f"× {world}" in text,
    }


def resume(plan: dict, data: Path, work: Path, logs: Path, deadline: float) -> dict:
    out = work / "resume"
    args = flags(plan, data, out, plan["steps"])
    proc = child.start([*PRETRAIN, *args], logs / "preempted.log")
    while time.time() < deadline and proc.poll() is None and len(records(out)) < plan["stop_after"]:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # the launcher only, as a TPU VM's preemption notice
    stop_exit, _ = child.finish(proc, logs / "preempted.log", left(deadline))
    ckpts = sorted(out.glob("checkpoint-*"))
    text = pretrain(args, logs / "resume.log", deadline)
    resumed = [ln for ln in text.splitlines() if ln.startswith("resumed from")]
    return {
        "stop_exit": stop_exit,
        "checkpoints": [c.name for c in ckpts],
        "resumed": resumed[0].replace(str(work), "$TMP") if resumed else None,
        "finished": (out / "final" / "model.safetensors").is_file(),
        "pass": stop_exit == 3 and len(ckpts) == 1 and bool(resumed),
    }


def markdown(res: dict) -> str:
    ok = all(v.get("pass", True) and "error" not in v for v in res.values() if isinstance(v, dict))
    md = [f"# BiGS TPU check: **{'PASS' if ok else 'FAIL'}**", ""]
    for key, v in res.items():
        md += [f"## {key}", "", *(f"- {k}: {x}" for k, x in v.items()), ""]
    return "\n".join(md)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--smoke", action="store_true", help="XLA:CPU, 2 devices, tiny sizes")
    a = p.parse_args()
    plan = SMOKE if a.smoke else FULL
    deadline = time.time() + plan["total_s"]
    out = Path(a.out_dir)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    res: dict = {}

    def write() -> str:  # after every section: a check stopped later keeps what it found
        (out / "tpu_check.json").write_text(json.dumps(res, indent=1))
        md = markdown(res)
        (out / "tpu_check.md").write_text(md + "\n")
        return md

    try:
        import torch
        import torch_xla

        res["install"] = {"torch": torch.__version__, "torch_xla": torch_xla.__version__,
                          "PJRT_DEVICE": os.environ.get("PJRT_DEVICE", "(unset)"), "pass": True}  # fmt: skip
        res["devices"] = {**devices(deadline), "pass": True}
    except Exception as exc:  # noqa: BLE001 — the first thing a new VM gets wrong: said at once
        res["install"] = {"error": f"{type(exc).__name__}: {exc}", "pass": False}
    write()
    world = res.get("devices", {}).get("count", 0)
    with tempfile.TemporaryDirectory(prefix="tpu-check-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        for k in range(2):
            synthetic_shard(data / f"train_shard_{k}.hdf5", plan["rows"], 128, 20, seed=k)
        for key, fn in (("steps", lambda: steps(plan, data, Path(tmp), logs, world, deadline)),
                        ("resume", lambda: resume(plan, data, Path(tmp), logs, deadline))):  # fmt: skip
            if not world or left(deadline) < 10:
                why = "no XLA device" if not world else f"the check's {plan['total_s']} s are spent"
                res[key] = {"error": f"skipped: {why}", "pass": False}
            else:
                try:
                    res[key] = fn()
                except Exception as exc:  # noqa: BLE001 — recorded; the other section still runs
                    traceback.print_exc()
                    res[key] = {"error": f"{type(exc).__name__}: {exc}", "pass": False}
            write()
    md = write()
    print(md)
    return 0 if "**PASS**" in md else 1


if __name__ == "__main__":
    sys.exit(main())
