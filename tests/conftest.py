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

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Offline before anything imports huggingface_hub/transformers (they read these at import time).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
WIKI_SAMPLE = REPO / "data" / "enwiki-sample-106-articles.xml.bz2"
SAMPLES_SETTINGS = {"num_train_shards": 4, "num_test_shards": 2, "frac_test": 0.1, "shard_seed": 1,
                    "dup_factor": 2, "seed": 42, "max_seq_length": 128, "max_predictions_per_seq": 20}


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
    proc = subprocess.Popen([exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
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
    shard(wiki_corpus_dir, out, s["num_train_shards"], s["num_test_shards"], s["frac_test"], s["shard_seed"],
          n_processes=2)
    return out


@pytest.fixture(scope="session")
def wiki_samples_dir(wiki_text_shards_dir, tmp_path_factory) -> Path:
    from bigs.data.samples import generate

    s = SAMPLES_SETTINGS
    out = tmp_path_factory.mktemp("wiki-samples") / "samples"
    generate(wiki_text_shards_dir, out, dup_factor=s["dup_factor"], seed=s["seed"], max_seq_length=s["max_seq_length"],
             max_predictions_per_seq=s["max_predictions_per_seq"], n_processes=2)
    return out
