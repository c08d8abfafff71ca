"""A new run from a model's weights (--model_name_or_path): continuing BiGS to a longer length, as
the published BiGS_512 / 1024 / 4096 continued BiGS_128 (REFERENCE.md §7).

    source = check_source("results/pretrain/bigs-128/final", model_type="s4-bert", sizes={...}, max_seq_length=512)
    load_into(model, source, position_init="tile", seed=42)   # every tensor exact; new position rows by rule

Only the learned position table depends on the length: the S4D kernel is computed from length-free
parameters (A, C, D, log_step) for whatever L the input has. When the run is longer than the model,
the table's first L_old rows are the model's and the others follow `position_init`:
  tile    row i = row (i mod L_old): the learned rows repeated, as Longformer extended RoBERTa's 512
          positions to 4096 ("copying ... is much faster to converge than random"); the default.
  random  N(0, initializer_range), as a fresh model's rows.
How the authors initialised the new rows of BiGS_512/1024/4096 is not public (their pretrain.py
declares model_name_or_path but never loads it).
Everything is checked before anything is written: the architecture (a BERT model into s4-bert),
the sizes the flags ask for, a shorter length than the model's, a directory without weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from bigs.errors import BigsError, fail, first_line

POSITION_INITS = ("tile", "random")
POSITIONS = {"BiGS": "bigs.embeddings.position_embeddings.weight", "bert": "bert.embeddings.position_embeddings.weight"}
MODEL_TYPES = {"s4-bert": "BiGS", "bert": "bert"}  # --model_type -> config.json's model_type
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


@dataclass
class Source:
    name: str  # as given: a dir or a hub name
    config: dict  # its config.json
    tokens_seen: int  # from its trainer_state.json (our runs), else 0

    @property
    def positions(self) -> int:
        return int(self.config["max_position_embeddings"])


def check_source(name: str, *, model_type: str, sizes: dict, max_seq_length: int) -> Source:
    """The model's config, checked against what the run builds (sizes: config key -> the flags' value)."""
    local = Path(name)
    if local.exists():
        if not (local / "config.json").is_file():
            raise fail(
                local, "--model_name_or_path", "no config.json — pass final/, a checkpoint-<step>/ or a saved model dir"
            )
        if not any((local / f).is_file() for f in WEIGHT_FILES):
            raise fail(
                local, "--model_name_or_path", f"no weights ({' or '.join(WEIGHT_FILES[:2])}) beside config.json"
            )
        config = json.loads((local / "config.json").read_text())
        state = local / "trainer_state.json"
        tokens = json.loads(state.read_text()).get("tokens_seen", 0) if state.is_file() else 0
    else:
        config, tokens = hub_config(name), 0
    where = local / "config.json" if local.exists() else name
    want = MODEL_TYPES[model_type]
    if config.get("model_type") != want:
        raise fail(
            where,
            "model_type",
            f"{config.get('model_type')!r} but --model_type {model_type} builds {want!r}: weights of another "
            "architecture cannot start this run",
        )
    for key, value in sizes.items():
        if key in config and config[key] != value:
            raise fail(where, key, f"{config[key]} but the flags ask for {value}: pass the model's own sizes")
    source = Source(name, config, int(tokens))
    if max_seq_length < source.positions:
        raise fail(
            where,
            "max_position_embeddings",
            f"the model has {source.positions} positions but --max_seq_length is {max_seq_length}: a shorter run "
            f"would train the first {max_seq_length} rows and leave the rest stale while its config said "
            f"{max_seq_length} — not supported; fine-tune or evaluate the model on shorter inputs as it is",
        )
    return source


def hub_config(name: str) -> dict:
    """config.json of a hub model (online, or from the local Hugging Face cache)."""
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(name, "config.json")).read_text())
    except Exception as exc:  # noqa: BLE001 — offline, unknown repo, no access: one line
        first = first_line(exc)
        raise fail(
            name, "--model_name_or_path", f"not a local dir, and the hub has no such model or is unreachable ({first})"
        ) from None


def load_into(model, source: Source, *, position_init: str = "tile", seed: int = 0) -> None:
    """Every tensor of `source` into `model` exactly (same names and shapes), but the position table
    when `model` is longer: the model's rows first, then `position_init`'s."""
    from transformers import AutoModelForMaskedLM

    import bigs.model  # noqa: F401  (registers "BiGS" with the Auto classes)

    try:
        theirs = AutoModelForMaskedLM.from_pretrained(source.name).state_dict()
    except (OSError, ValueError, RuntimeError) as exc:
        first = first_line(exc)
        raise fail(source.name, "--model_name_or_path", f"cannot load its weights ({first})") from None
    ours = model.state_dict()
    position_key = POSITIONS[source.config["model_type"]]
    missing = sorted(k for k in ours if k not in theirs and ".pooler." not in k and "position_ids" not in k)
    if missing:
        raise fail(source.name, missing[0], f"not in the model ({len(missing)} tensors missing): another layout")
    with torch.no_grad():
        for key, t in ours.items():
            if key not in theirs:
                continue
            src = theirs[key]
            if key == position_key and src.shape[0] < t.shape[0]:
                src = extend_positions(src, t.shape[0], position_init, model.config.initializer_range, seed)
            if src.shape != t.shape:
                raise fail(source.name, key, f"shape {tuple(src.shape)}, this run's is {tuple(t.shape)}")
            t.copy_(src)


def extend_positions(table: torch.Tensor, length: int, how: str, std: float, seed: int) -> torch.Tensor:
    """(L_old, H) -> (length, H): the learned rows, then rows by `how` (module docstring)."""
    L_old, H = table.shape
    if how == "tile":
        return table[torch.arange(length) % L_old]  # (length H)
    if how == "random":
        g = torch.Generator().manual_seed(seed)
        new = torch.randn(length - L_old, H, generator=g, dtype=table.dtype) * std  # (length-L_old H)
        return torch.cat([table, new])
    raise BigsError(f"--position_init: {how!r} is not one of {', '.join(POSITION_INITS)}")
