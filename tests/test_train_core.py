"""bigs/train/ and bigs/data/stream.py in isolation: RNG state per rank, lost-peer messages, stop
signals, tied weights on the host, the per-shard range check, TrainState round trip."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch
from conftest import make_shard, run_cli, tiny_args

from bigs.errors import BigsError
from bigs.train import checkpoint as ckpt
from bigs.train.runtime import Runtime


# ----------------------------------------------------------------------------- RNG: this rank's device only
class FakeCuda:
    """torch.cuda as seen by one rank: `n` visible devices, an RNG state per device."""

    def __init__(self, n):
        self.states = {i: torch.tensor([7 + i], dtype=torch.uint8) for i in range(n)}  # none the default 0
        self.set_calls = []

    def get_rng_state(self, device="cuda"):
        return self.states[torch.device(device).index or 0].clone()

    def get_rng_state_all(self):
        raise AssertionError("every visible device's state: a resume with fewer GPUs would fail")

    def set_rng_state(self, state, device="cuda"):
        i = torch.device(device).index or 0
        if i not in self.states:
            raise RuntimeError(f"invalid device {i}")
        self.set_calls.append((i, int(state[0])))


@pytest.mark.parametrize("saved_on, resumed_on", [(8, 1), (1, 8), (4, 4)])
def test_cuda_rng_saved_and_restored_for_this_ranks_device_only(monkeypatch, saved_on, resumed_on):
    """A checkpoint written with 8 visible GPUs resumes on a machine with 1, and the other way round."""
    fake = FakeCuda(saved_on)
    monkeypatch.setattr(torch, "cuda", fake)
    rt = Runtime("cuda", torch.device("cuda", 0))
    js, ts = ckpt.rng_state(rt)
    assert set(ts) == {"torch", "cuda"}
    fake_after = FakeCuda(resumed_on)
    monkeypatch.setattr(torch, "cuda", fake_after)
    ckpt.set_rng_state(js, ts, rt)
    assert fake_after.set_calls == [(0, 7)]  # device 0's saved state, to device 0


def test_cpu_rng_round_trip():
    rt = Runtime("cpu", torch.device("cpu"))
    js, ts = ckpt.rng_state(rt)
    a = (np.random.rand(), torch.rand(3))
    ckpt.set_rng_state(js, ts, rt)
    b = (np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and torch.equal(a[1], b[1])


# ----------------------------------------------------------------------------- lost peers
GLOO = [  # (text, what happened to the peer)
    ("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:40123", "died"),
    (
        "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 8000ms for recv operation to complete",
        "hung",
    ),
]
NCCL = [  # ProcessGroupNCCL's texts (blocking wait on, torch 2.x)
    ("[Rank 0] Work WorkNCCL(SeqNum=12, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=1800000) timed out in blocking wait.", "hung"),
    ("[Rank 1] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7, OpType=ALLREDUCE) ran for 1800070 milliseconds before timing out.", "hung"),
    ("NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.hpp:317, remote process exited or there was a network error, NCCL version 2.21.5", "died"),
    ("NCCL communicator was aborted on rank 1.", "died"),
]  # fmt: skip


@pytest.fixture
def process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("text, peer", GLOO + NCCL)
def test_lost_peer_messages_of_gloo_and_nccl_are_one_line(process_group, tmp_path, text, peer):
    from bigs.train.distributed import lost_peer_message

    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text("{}")
    msg = lost_peer_message(RuntimeError(text), str(tmp_path))
    assert msg is not None and "\n" not in msg and "rank 0 of 1" in msg and "checkpoint-10" in msg
    assert ("hung past --dist_timeout" in msg) == (peer == "hung") and ("died" in msg) == (peer == "died")


@pytest.mark.parametrize(
    "exc", [RuntimeError("CUDA out of memory"), ValueError("Timed out"), RuntimeError("NCCL error: invalid usage")]
)
def test_other_errors_keep_their_traceback(process_group, tmp_path, exc):
    from bigs.train.distributed import lost_peer_message

    assert lost_peer_message(exc, str(tmp_path)) is None


# ----------------------------------------------------------------------------- stop signals
def test_stop_flag_restores_every_handler_it_installed():
    from bigs.train.signals import SIGNALS, StopFlag

    before = {s: signal.getsignal(s) for s in SIGNALS}
    with StopFlag() as stop:
        assert all(signal.getsignal(s) == stop._on_signal for s in SIGNALS)
        signal.raise_signal(signal.SIGUSR1)
        assert stop.signal == "SIGUSR1"
    assert {s: signal.getsignal(s) for s in SIGNALS} == before


def test_pretrain_main_in_process_gives_back_its_handlers(shards, tmp_path):
    """gpu_check runs bigs.pretrain.main in its own process: SIGINT included, its handlers come back."""
    from bigs.pretrain import main

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    assert main(tiny_args(shards, tmp_path / "run", steps=2, eval_steps=2, warmup_steps=1)) == 0
    assert {s: signal.getsignal(s) for s in before} == before


# ----------------------------------------------------------------------------- tied weights on the host
def test_host_copy_keeps_the_tied_decoder_one_tensor(monkeypatch, tmp_path):
    """On a device every .cpu() copies (simulated here): the decoder must stay the embeddings' tensor,
    so the file holds it once (per-entry .cpu() stored it twice: 125 MB at paper size)."""
    from safetensors import safe_open

    from bigs.model import BiGSConfig, BiGSForMaskedLM

    model = BiGSForMaskedLM(
        BiGSConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, intermediate_size=37, num_ssm=4)
    )
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: self.clone())
    sd = ckpt.host_state_dict(model)
    assert sd["cls.predictions.decoder.weight"] is sd["bigs.embeddings.word_embeddings.weight"]
    assert sd["bigs.encoder.layer.0.dv.weight"] is not sd["bigs.encoder.layer.0.do.weight"]
    ckpt.save_model(model, tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "bigs.embeddings.word_embeddings.weight" in keys and "cls.predictions.decoder.weight" not in keys


# ----------------------------------------------------------------------------- per-shard range check
@pytest.mark.parametrize("field", ["input_ids", "masked_lm_ids", "masked_lm_positions"])
def test_out_of_range_ids_stop_before_any_step_on_that_shard(tmp_path, field):
    from bigs.data.format import read_shard, write_shard
    from bigs.data.stream import TrainStream

    good, bad = tmp_path / "train_shard_0.hdf5", tmp_path / "train_shard_1.hdf5"
    make_shard(good, 16, seed=0)
    make_shard(bad, 16, seed=1)
    a = read_shard(bad)
    a[field][5, 1] = 30522 if field != "masked_lm_positions" else 32  # vocab size / L: one past the end
    write_shard(bad, **a)
    stream = TrainStream([str(bad)], per_device=4)
    with pytest.raises(BigsError, match=rf"train_shard_1\.hdf5: {field}: value (30522|32) out of range"):
        next(iter(stream))
    firsts = set()
    for seed in range(6):  # both shard orders
        order = TrainStream([str(good), str(bad)], per_device=4, seed=seed)
        first = order.shards[order._order(0)[0]]
        batches = []
        with pytest.raises(BigsError, match="train_shard_1"):
            for b in order:
                batches.append(b)
        assert len(batches) == (4 if first == str(good) else 0)  # every batch of the good shard, none of the bad
        firsts.add(first)
    assert firsts == {str(good), str(bad)}


def test_the_trainer_names_the_bad_shard_and_exits_2(shards, tmp_path):
    import shutil

    from bigs.data.format import read_shard, write_shard

    data = tmp_path / "data"
    shutil.copytree(shards, data)
    a = read_shard(data / "train_shard_1.hdf5")
    a["input_ids"][0, 3] = 40000
    write_shard(data / "train_shard_1.hdf5", **a)
    r = run_cli(tiny_args(data, tmp_path / "run", steps=30), check=False)
    assert r.returncode == 2 and "train_shard_1.hdf5: input_ids: value 40000 out of range [0, 30522)" in r.stderr
    assert "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- TrainState
def test_train_state_round_trips_and_ignores_unknown_keys(tmp_path):
    s = ckpt.TrainState(step=7, tokens_seen=896, data_position=[0, 1, 2], elapsed_s=12.5, args={"seed": 1})
    d = json.loads(json.dumps({**ckpt.dataclasses.asdict(s), "rng": [], "later_field": 1}))
    assert ckpt.TrainState.from_json(d) == s


# ----------------------------------------------------------------------------- run directory
def test_a_start_clears_every_write_a_kill_cut_short_and_keeps_the_rest(tmp_path):
    from bigs.train.rundir import prepare_output_dir

    (tmp_path / ".tmp-final.abc").mkdir()  # errors.atomic_dir of final/, cut short
    (tmp_path / ".tmp-checkpoint-10.xyz").mkdir()
    (tmp_path / ".tmp-metrics.jsonl.q1").write_text("{}")  # errors.atomic_path
    (tmp_path / "notes.txt").write_text("mine")
    resume_from, lock = prepare_output_dir(tmp_path, Runtime("cpu", torch.device("cpu")))
    lock.close()
    assert resume_from is None and sorted(p.name for p in tmp_path.iterdir()) == [".lock", "notes.txt"]


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    from bigs.train.rundir import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"kind": "train", "step": 5}\n{"kind": "eval", "step": 10}\n{"kind": "train", "step": 15}\n{"kind": "tr'
    )
    truncate_metrics(path, 10)
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [5, 10]
