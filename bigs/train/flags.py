"""argparse value types both training CLIs use."""

from __future__ import annotations

import argparse


def str2bool(s: str) -> bool:
    """`--flag true|false|1|0|yes|no` (HF and the original script accept both spellings)."""
    if s.lower() in ("1", "true", "yes", "y"):
        return True
    if s.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def positive(kind):
    """A type for argparse: `kind(s)`, which must be > 0."""

    def parse(s):
        v = kind(s)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v

    return parse
