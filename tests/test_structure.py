"""The shape of the code (STYLE.md §2, §12, §14): two flat loops over shared parts, short functions,
few positional parameters. Read from the source with ast, so a change that breaks a rule fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "bigs"
LOOPS = ("pretrain.py", "finetune.py")
MAX_LINES, MAX_LOOP_LINES, MAX_POSITIONAL = 100, 80, 6


def functions():
    """(module path, function node) for every def in bigs/, methods included."""
    for f in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f.relative_to(PKG.parent).as_posix(), node


def length(node) -> int:
    return node.end_lineno - node.lineno + 1


def positional(node) -> int:
    names = [a.arg for a in node.args.posonlyargs + node.args.args]
    return len(names) - (names[:1] in (["self"], ["cls"]))


def test_no_function_over_100_lines_except_argparse_builders():
    long = [f"{m}:{n.lineno} {n.name} ({length(n)} lines)" for m, n in functions() if length(n) > MAX_LINES]
    assert [x for x in long if " build_parser " not in x] == []


def test_the_loops_read_top_to_bottom():
    found = {}
    for m, n in functions():
        if m.removeprefix("bigs/") in LOOPS and n.name in ("main", "train") and n.col_offset == 0:
            found[f"{m}:{n.name}"] = length(n)
    assert len(found) == 4, found
    assert {k: v for k, v in found.items() if v > MAX_LOOP_LINES} == {}


def test_few_positional_parameters():
    """Model forward() and config constructors follow Hugging Face's signatures; everything else
    takes at most 6 positional values (group the rest in a dataclass or pass them by keyword)."""
    many = [
        f"{m}:{n.lineno} {n.name} ({positional(n)})"
        for m, n in functions()
        if positional(n) > MAX_POSITIONAL and n.name not in ("forward", "__init__")
    ]
    inits = [f"{m}:{n.lineno}" for m, n in functions() if n.name == "__init__" and positional(n) > MAX_POSITIONAL]
    assert many == []
    assert all(m.startswith("bigs/model.py") for m in inits), inits  # BiGSConfig's published fields only


@pytest.mark.parametrize("loop", ["bigs.pretrain", "bigs.finetune"])
def test_no_module_imports_a_loop(loop):
    """A loop never imports another loop, and nothing in the package imports either: what they share is bigs/train/."""
    importers = []
    for f in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(x == loop or x.startswith(loop + ".") for x in names):
                importers.append(str(f.relative_to(PKG.parent)))
    assert importers == []
