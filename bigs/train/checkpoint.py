"""Checkpoints, one format for both loops, and the model files a run publishes.

    checkpoint-<step>/                       (written as .tmp-checkpoint-<step>.*/, then renamed)
        config.json, model.safetensors       the model (published key names; a tied decoder once)
        optimizer.pt                         tensors only, loaded with weights_only=True
        trainer_state.json                   TrainState + every rank's python/numpy RNG
        rng-rank<r>.safetensors              rank r's torch RNG (and its own CUDA device's)

A directory without trainer_state.json is never loaded. `final/` (pretraining) and the
fine-tuned model hold config, weights, tokenizer files and trainer_state.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import time
from itertools import chain
from pathlib import Path

import numpy as np
import torch

from bigs.errors import BigsError, atomic_dir
from bigs.train.runtime import Runtime, barrier, gather_objects

CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
SIZE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "num_ssm")


@dataclasses.dataclass
class TrainState:
    """Where a run is: what a checkpoint restores besides weights, optimizer and RNG."""

    step: int = 0  # optimizer updates done
    tokens_seen: int = 0  # token positions trained on (pretraining)
    data_position: list | None = None  # the data stream's (epoch, shard, offset) (pretraining)
    elapsed_s: float = 0.0  # wall time of the training loop so far, over every resumed part
    loss_sum: float = 0.0  # Σ of the per-step losses (fine-tuning's train_loss)
    world_size: int = 1
    init_from: str | None = None  # the model a new run started from (--model_name_or_path), if any
    args: dict = dataclasses.field(default_factory=dict)  # the command's flags

    @classmethod
    def from_json(cls, data: dict) -> TrainState:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def complete_checkpoints(output_dir) -> list[Path]:
    """Checkpoints that finished writing (renamed into place with trainer_state.json), oldest first."""
    out = Path(output_dir)
    found = [(int(m.group(1)), d) for d in out.glob("checkpoint-*") if (m := CKPT_RE.match(d.name))]
    return [d for _, d in sorted(found) if (d / "trainer_state.json").is_file()]


# ----------------------------------------------------------------------------- RNG
def rng_state(rt: Runtime) -> tuple[dict, dict[str, torch.Tensor]]:
    """Every RNG this process draws from: a JSON part and a tensor part. [cuda] only this rank's own
    device, so a run resumes on a machine with another number of visible GPUs."""
    np_state = np.random.get_state()
    js = {
        "python": json.loads(json.dumps(random.getstate())),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    ts = {"torch": torch.get_rng_state()}
    if rt.kind == "cuda":  # [cuda]
        ts["cuda"] = torch.cuda.get_rng_state(rt.device)
    if rt.kind == "xla":  # [xla] the device's own generator: one seed
        import torch_xla.core.xla_model as xm

        js["xla"] = int(xm.get_rng_state(rt.device))
    return js, ts


def set_rng_state(js: dict, ts: dict[str, torch.Tensor], rt: Runtime) -> None:
    v, state, gauss = js["python"]
    random.setstate((v, tuple(state), gauss))
    n = js["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(ts["torch"])
    cuda = ts.get("cuda", ts.get(f"cuda{rt.device.index or 0}"))  # "cuda<i>": checkpoints that held every device's
    if rt.kind == "cuda" and cuda is not None:  # [cuda]
        torch.cuda.set_rng_state(cuda, rt.device)
    if rt.kind == "xla" and "xla" in js:  # [xla]
        import torch_xla.core.xla_model as xm

        xm.set_rng_state(js["xla"], rt.device)


# ----------------------------------------------------------------------------- model files
def host_state_dict(model) -> dict[str, torch.Tensor]:
    """model.state_dict() copied to the host, tensors that are one parameter on the device (the tied
    decoder) one tensor here too: `.cpu()` per entry would copy it twice and the file would hold it twice."""
    owner = {n: id(t) for n, t in chain(model.named_parameters(remove_duplicate=False), model.named_buffers())}
    copies, out = {}, {}
    for name, tensor in model.state_dict().items():
        key = owner.get(name, name)
        if key not in copies:
            copies[key] = tensor.detach().cpu()
        out[name] = copies[key]
    return out


def save_model(model, directory: Path) -> None:
    """HF layout (config.json + model.safetensors, published key names) from host copies ([xla], [cuda] safe)."""
    model.save_pretrained(directory, state_dict=host_state_dict(model), safe_serialization=True)


def load_weights(ckpt: Path, model) -> None:
    """The weights of `ckpt` into `model` after checking the sizes in its config.json match (one error naming the key)."""
    saved_cfg = json.loads((ckpt / "config.json").read_text())
    for key in SIZE_KEYS + ("max_position_embeddings",):
        if key in saved_cfg and saved_cfg[key] != getattr(model.config, key, saved_cfg[key]):
            raise BigsError(
                f"{ckpt}: config.json: {key} is {saved_cfg[key]!r} but this run builds "
                f"{getattr(model.config, key)!r}; use the same model flags, or another --output_dir"
            )
    saved = type(model).from_pretrained(ckpt)  # safetensors only, and re-ties the decoder
    model.load_state_dict(saved.state_dict())


def optimizer_state_cpu(optimizer) -> dict:
    sd = optimizer.state_dict()
    sd["state"] = {
        k: {n: (v.detach().cpu() if torch.is_tensor(v) else v) for n, v in s.items()} for k, s in sd["state"].items()
    }
    return sd


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(out: Path, state: TrainState, model, optimizer, *, rt: Runtime, keep: int | None) -> Path:
    """checkpoint-<step>/ (rank 0 writes; every rank's RNG goes in). keep = the newest K stay (None/0 = all).
    A failed write (full disk, quota) leaves nothing at the final name and the previous checkpoint intact."""
    from safetensors import SafetensorError

    final = Path(out) / f"checkpoint-{state.step}"
    if rt.kind == "xla":  # [xla] run the pending graph once, so each .cpu() below is a plain copy
        import torch_xla

        torch_xla.sync()
    js, ts = rng_state(rt)
    gathered = gather_objects((js, {k: v.cpu() for k, v in ts.items()}), rt)  # every rank's RNG goes in
    if rt.master:
        try:
            _write_checkpoint(final, state, model, optimizer, gathered)
        except (OSError, RuntimeError, SafetensorError) as exc:
            prev = complete_checkpoints(out)
            free = shutil.disk_usage(out).free
            raise BigsError(
                f"{final}: checkpoint: write failed ({getattr(exc, 'strerror', None) or exc}; "
                f"{free / 2**20:.1f} MiB free); nothing was written there and "
                f"{prev[-1] if prev else 'no earlier checkpoint'} is intact — free space "
                "(or lower --save_total_limit) and rerun to resume"
            ) from exc
        if keep:
            for old in complete_checkpoints(out)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    barrier(rt)
    return final


def _write_checkpoint(final: Path, state: TrainState, model, optimizer, gathered: list) -> None:
    from safetensors.torch import save_file

    with atomic_dir(final) as tmp:
        save_model(model, tmp)
        torch.save(optimizer_state_cpu(optimizer), tmp / "optimizer.pt")
        for r, (_, t) in enumerate(gathered):
            save_file({k: v.contiguous() for k, v in t.items()}, str(tmp / f"rng-rank{r}.safetensors"))
        data = {**dataclasses.asdict(state), "rng": [j for j, _ in gathered]}
        (tmp / "trainer_state.json").write_text(json.dumps(data, indent=1))
        if os.environ.get("BIGS_FAULT_CHECKPOINT_DELAY"):  # fault injection for tests: a slow write
            time.sleep(float(os.environ["BIGS_FAULT_CHECKPOINT_DELAY"]))


def read_state(ckpt: Path) -> TrainState:
    return TrainState.from_json(json.loads((Path(ckpt) / "trainer_state.json").read_text()))


def load_checkpoint(ckpt: Path, model, optimizer, *, rt: Runtime) -> TrainState:
    """Model, optimizer and this rank's RNG from `ckpt` (safetensors; weights_only); returns its TrainState."""
    from safetensors.torch import load_file

    data = json.loads((ckpt / "trainer_state.json").read_text())
    load_weights(ckpt, model)
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True, map_location="cpu"))
    rngs = data.get("rng", [])
    if rt.rank >= len(rngs):
        raise BigsError(
            f"{ckpt}: trainer_state.json: written by {len(rngs)} ranks, resumed with more; "
            "resume with the same world size or start over with --resume never"
        )
    set_rng_state(rngs[rt.rank], load_file(str(ckpt / f"rng-rank{rt.rank}.safetensors")), rt)
    return TrainState.from_json(data)


def write_model_dir(directory: Path, model, *, tokenizer=None, state: dict | None = None) -> None:
    """What a run publishes: the model, its tokenizer files (`tokenizer(directory)` writes them) and
    trainer_state.json. The caller makes it atomic (atomic_dir for final/, atomic_files beside other outputs)."""
    save_model(model, directory)
    if tokenizer is not None:
        tokenizer(directory)
    if state is not None:
        (directory / "trainer_state.json").write_text(json.dumps(state, indent=1))
