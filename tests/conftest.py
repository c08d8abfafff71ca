"""Shared fixtures.

- `gcs_emulator`: a gcp-storage-emulator on 127.0.0.1 (free port) for one test; yields its URL
  (a str with `.port` and `.stop()`), sets STORAGE_EMULATOR_HOST for the test (subprocesses
  inherit it) and stops the server afterwards. Make buckets with `gcs_bucket(name)`.
- `wiki_corpus_dir`, `wiki_text_shards_dir`, `wiki_samples_dir` (session): the bundled Wikipedia
  sample through bigs.data.process -> shard -> samples, built once per session.
  wiki_samples_dir holds train_shard_0..7.hdf5 (4 text shards x dup 2) and test_shard_0..3.hdf5
  (2 x 2) at max_seq_length 128, max_predictions_per_seq 20, seed 42.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

# Offline before anything imports huggingface_hub/transformers (they read these at import time).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
WIKI_SAMPLE = REPO / "data" / "enwiki-sample-106-articles.xml.bz2"
SAMPLES_SETTINGS = {
    "num_train_shards": 4,
    "num_test_shards": 2,
    "frac_test": 0.1,
    "shard_seed": 1,
    "dup_factor": 2,
    "seed": 42,
    "max_seq_length": 128,
    "max_predictions_per_seq": 20,
}


@pytest.fixture(autouse=True, scope="session")
def _offline_env(tmp_path_factory):
    """Tests never reach a model hub; punkt_tab files go to a session cache dir."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("BIGS_CACHE", str(tmp_path_factory.mktemp("bigs-cache")))
    yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmulatorURL(str):
    """The emulator's URL; `.port`, `.stop()` (idempotent) for fault-injection tests."""

    proc: subprocess.Popen
    port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start_emulator(tmp_path) -> EmulatorURL:
    exe = shutil.which("gcp-storage-emulator") or str(Path(sys.executable).parent / "gcp-storage-emulator")
    if not Path(exe).exists():
        pytest.skip("gcp-storage-emulator not installed (pip install gcp-storage-emulator)")
    port = free_port()
    log = open(tmp_path / f"gcs-emulator-{port}.log", "w")
    proc = subprocess.Popen(
        [exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    url = EmulatorURL(f"http://127.0.0.1:{port}")
    url.proc, url.port = proc, port
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited: {(tmp_path / log.name).read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return url
        except OSError:
            time.sleep(0.1)
    url.stop()
    raise RuntimeError("gcp-storage-emulator did not start within 30 s")


@pytest.fixture
def gcs_emulator(tmp_path, monkeypatch):
    url = _start_emulator(tmp_path)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    monkeypatch.setenv("BIGS_GSUTIL", "never")
    try:
        yield url
    finally:
        url.stop()


@pytest.fixture
def gcs_bucket(gcs_emulator):
    """Factory: gcs_bucket("name") creates the bucket on the emulator and returns it."""
    from bigs.data.storage import gcs_client

    def make(name: str = "bigs-test"):
        return gcs_client().create_bucket(name)

    return make


# ------------------------------------------------------------------ tiny real dataset
@pytest.fixture(scope="session")
def wiki_corpus_dir(tmp_path_factory) -> Path:
    from bigs.data.process import process

    out = tmp_path_factory.mktemp("wiki-corpus")
    process(WIKI_SAMPLE, out, "wiki", n_processes=2)
    return out


@pytest.fixture(scope="session")
def wiki_text_shards_dir(wiki_corpus_dir, tmp_path_factory) -> Path:
    from bigs.data.shard import shard

    s = SAMPLES_SETTINGS
    out = tmp_path_factory.mktemp("wiki-shards") / "shards"
    shard(
        wiki_corpus_dir,
        out,
        s["num_train_shards"],
        s["num_test_shards"],
        s["frac_test"],
        s["shard_seed"],
        n_processes=2,
    )
    return out


@pytest.fixture(scope="session")
def wiki_samples_dir(wiki_text_shards_dir, tmp_path_factory) -> Path:
    from bigs.data.samples import generate

    s = SAMPLES_SETTINGS
    out = tmp_path_factory.mktemp("wiki-samples") / "samples"
    generate(
        wiki_text_shards_dir,
        out,
        dup_factor=s["dup_factor"],
        seed=s["seed"],
        max_seq_length=s["max_seq_length"],
        max_predictions_per_seq=s["max_predictions_per_seq"],
        n_processes=2,
    )
    return out


# ---------------------------------------------------------------- helpers shared by test modules
# Pretraining: tiny synthetic shards and the real CLI in a subprocess.
def make_shard(path, n, L=32, P=5, seed=0):
    """n instances: [CLS] base, base+s, base+2s, ... [SEP], 3 masked positions, 0-padded."""
    from bigs.data.format import write_shard

    r = np.random.default_rng(seed)
    ids, mask = np.zeros((n, L), np.int32), np.zeros((n, L), np.int8)
    pos, mids = np.zeros((n, P), np.int32), np.zeros((n, P), np.int32)
    for i in range(n):
        ln = int(r.integers(12, L + 1))
        toks = int(r.integers(2000, 2050)) + int(r.integers(1, 4)) * np.arange(ln - 2)
        ids[i, 0], ids[i, 1 : ln - 1], ids[i, ln - 1] = 101, toks, 102
        mask[i, :ln] = 1
        p = np.sort(r.choice(np.arange(1, ln - 1), size=3, replace=False))
        pos[i, :3], mids[i, :3] = p, ids[i, p]
        ids[i, p] = 103
    write_shard(
        path,
        input_ids=ids,
        input_mask=mask,
        segment_ids=np.zeros_like(mask),
        masked_lm_positions=pos,
        masked_lm_ids=mids,
    )


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Three small train shards (40, 47, 54 instances) and a test shard of make_shard's data."""
    d = tmp_path_factory.mktemp("shards")
    for k in range(3):
        make_shard(d / f"train_shard_{k}.hdf5", 40 + 7 * k, seed=k)
    make_shard(d / "test_shard_0.hdf5", 30, seed=99)
    return d


def tiny_args(data, out, steps=30, **over) -> list[str]:
    flags = dict(
        output_dir=out,
        dataset_path=data,
        max_seq_length=32,
        max_predictions_per_seq=5,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        n_layers=2,
        hidden_size=32,
        intermediate_size=48,
        num_total_train_steps=steps,
        warmup_steps=5,
        logging_steps=1,
        save_steps=10,
        eval_steps=15,
        learning_rate=3e-3,
        hidden_dropout_prob=0.1,
        seed=7,
    )
    flags.update(over)
    return [f"--{k}={v}" for k, v in flags.items()]


def run_cli(args, env=None, check=True, launcher=(), timeout=300):
    cmd = [*launcher] if launcher else [sys.executable, "-m", "bigs.pretrain"]
    r = subprocess.run(cmd + args, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def metrics(out, kind="train"):
    return [
        json.loads(ln)
        for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()
        if json.loads(ln)["kind"] == kind
    ]


def logged(out, kind="train") -> list[dict]:
    """The `kind` lines a running run has logged so far (a line being written is skipped)."""
    m = Path(out) / "metrics.jsonl"
    rows = []
    for ln in m.read_text().splitlines() if m.exists() else []:
        try:
            rec = json.loads(ln)
        except ValueError:
            continue
        if rec.get("kind") == kind:
            rows.append(rec)
    return rows


def wait_until(cond, procs=(), timeout=120, what="condition", poll=0.02) -> None:
    """Poll `cond()` until it holds; fail naming `what` when the time is up or a process of `procs` exits first."""
    deadline = time.time() + timeout
    while not cond():
        codes = [p.poll() for p in procs]
        assert all(c is None for c in codes), f"{what}: not reached, a process exited first (exit {codes})"
        assert time.time() < deadline, f"{what}: not reached in {timeout} s"
        time.sleep(poll)


def wait_for_step(out, step: int, procs=(), timeout=120, what=None, poll=0.02) -> None:
    """Until the run in `out` has logged a training line at `step` or later."""
    reached = lambda: any(r["step"] >= step for r in logged(out))  # noqa: E731
    wait_until(reached, procs, timeout, what or f"{out}: step {step}", poll)


def weights_hash(directory) -> str:
    from safetensors.torch import load_file

    sd = load_file(str(Path(directory) / "model.safetensors"))
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].contiguous().numpy().tobytes())
    return h.hexdigest()


# The workflow: a copy of its files in a temp dir, snakemake in a subprocess.
WORKFLOW_FILES = ["Snakefile", "rules", "schemas", "scripts", "envs", "presets", "profiles", "config.yaml", "data"]

# The trimmed embedded default: same stages, fewer shards, a 20-step tiny model.
TINY = {
    "shards": {"num_train_shards": 2, "num_test_shards": 1},
    "samples": {"dup_factor": 2},
    "pretrain": {
        "n_layers": 1, "hidden_size": 32, "intermediate_size": 48, "num_ssm": 8,
        "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
        "num_total_train_steps": 20, "warmup_steps": 5, "logging_steps": 5, "eval_steps": 10,
        "save_steps": 10, "eval_batches": 4,
    },
    "evaluate": {"max_batches": 4, "batch_size": 16},
}  # fmt: skip


def copy_workflow(dest: Path) -> Path:
    """The workflow's own files in a fresh dir (results/, logs/, .snakemake/ stay out)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def smk(wf: Path, *args, check=True, timeout=900):
    """Run snakemake in `wf`; returns the CompletedProcess (stdout+stderr in .stdout)."""
    cmd = [sys.executable, "-m", "snakemake", *args]
    p = subprocess.run(cmd, cwd=wf, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, f"{shlex.join(cmd[2:])} failed:\n{p.stdout[-6000:]}"
    return p


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: rule -> count."""
    counts = {}
    table = output.split("Job stats:")[-1] if "Job stats:" in output else ""
    for line in table.splitlines()[3:]:
        m = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    counts.pop("total", None)
    return counts


def shell_commands(output: str, marker: str) -> list[list[str]]:
    """Argument lists of the printed shell commands (`-p`) that contain `marker`."""
    cmds = []
    for line in output.splitlines():
        if line.startswith("Shell command:") and marker in line:
            cmd = line.split("Shell command:", 1)[1].split(" > ")[0]
            cmds.append(shlex.split(cmd))
    return cmds
