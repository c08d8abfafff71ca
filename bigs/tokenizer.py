"""The tokenizer a model ships with: the bundled bert-large-uncased WordPiece vocab (REFERENCE.md
§3), written next to every model we save and read back with one set of checks.

    save_tokenizer(directory, max_length=512)
    tok = load_tokenizer(None, model_dir, vocab_size)   # the dir's own, else the bundled vocab
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bigs.errors import fail

BUNDLED_VOCAB = Path(__file__).parent / "data" / "vocab" / "bert-large-uncased-vocab.txt"
# Hub names whose vocab is the bundled one (REFERENCE.md §3): usable offline without a download.
BUNDLED_NAMES = {
    "bert-large-uncased",
    "bert-base-uncased",
    "google-bert/bert-large-uncased",
    "google-bert/bert-base-uncased",
}


def quiet_transformers():
    """No info logs or download bars from transformers in our output."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def save_tokenizer(directory: Path, max_length: int = 512) -> None:
    """The bundled vocab and a BertTokenizer config with the model's length, so fill-mask works offline."""
    shutil.copyfile(BUNDLED_VOCAB, Path(directory) / "vocab.txt")
    (Path(directory) / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": max_length}, indent=1
        )
    )


def load_tokenizer(spec: str | None, model_dir: Path, vocab_size: int, *, local_only: bool = True, masked_lm=True):
    """The tokenizer of the model dir if it has one, else `spec` (vocab file, dir or a hub name:
    from the local cache, or downloaded when local_only is False), else the bundled
    bert-large-uncased vocab. Checks it fits the model's vocab and, for a masked LM, that it is a
    BERT WordPiece vocab with [MASK] (fine-tuning takes any tokenizer of a Hugging Face model)."""
    quiet_transformers()
    from transformers import AutoTokenizer, BertTokenizer

    def from_dir(d: Path):
        if (d / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(d, local_files_only=True)
        # transformers 5 trap (REFERENCE.md §4): BertTokenizerFast(vocab_file=...) builds a 5-token
        # vocab; BertTokenizer(vocab=path) reads the file.
        cfg = json.loads((d / "tokenizer_config.json").read_text()) if (d / "tokenizer_config.json").is_file() else {}
        return BertTokenizer(vocab=str(d / "vocab.txt"), do_lower_case=cfg.get("do_lower_case", True))

    if spec is None:
        has_files = any((model_dir / f).is_file() for f in ("tokenizer.json", "vocab.txt"))
        src, tok = (model_dir, from_dir(model_dir)) if has_files else (BUNDLED_VOCAB, None)
        if tok is None:
            tok = BertTokenizer(vocab=str(BUNDLED_VOCAB), do_lower_case=True)
    elif spec in BUNDLED_NAMES:
        src, tok = BUNDLED_VOCAB, BertTokenizer(vocab=str(BUNDLED_VOCAB), do_lower_case=True)
    elif Path(spec).is_file():
        src, tok = Path(spec), BertTokenizer(vocab=str(spec), do_lower_case=True)
    elif Path(spec).is_dir():
        if not any((Path(spec) / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
            raise fail(spec, "--tokenizer", "directory has neither tokenizer.json nor vocab.txt")
        src, tok = Path(spec), from_dir(Path(spec))
    else:
        try:
            src, tok = spec, AutoTokenizer.from_pretrained(spec, local_files_only=local_only)
        except (OSError, ValueError) as exc:
            raise fail(
                spec,
                "--tokenizer",
                "not a file or directory, and not in the local Hugging Face cache "
                f"({'offline; ' if local_only else ''}{type(exc).__name__}) — pass a vocab.txt, a tokenizer dir, or "
                "bert-large-uncased for the bundled vocab",
            ) from None
    if len(tok) > vocab_size:
        raise fail(src, "--tokenizer", f"{len(tok)} tokens but the model has vocab_size {vocab_size}")
    if src == BUNDLED_VOCAB:
        assert len(tok) == 30522, f"bundled vocab read as {len(tok)} tokens (REFERENCE.md §4 trap)"
    if masked_lm and (tok.mask_token_id is None or tok.convert_tokens_to_ids("the") == tok.unk_token_id):
        raise fail(
            src,
            "--tokenizer",
            f"vocab of {len(tok)} tokens maps 'the' to [UNK] or has no [MASK] — not a BERT WordPiece vocab",
        )
    return tok
