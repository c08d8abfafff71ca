"""Text shards -> WordPiece -> static MLM masking -> hdf5 shards (REFERENCE.md §3).

Drop-in for academic-budget-bert `generate_samples.py` (same flags and meaning):

    python -m bigs.data.samples --dir SHARDS -o OUT --dup_factor 10 --seed 42 \\
        --vocab_file V --do_lower_case 1 --masked_lm_prob 0.15 --max_seq_length 128 \\
        --model_name bert-large-uncased --max_predictions_per_seq 20 --n_processes 16 \\
        [--short_seq_prob 0.1] [--whole_word_mask] [--overwrite]

Unlike academic-budget (which re-tokenizes for every copy), each text shard is tokenized ONCE
and the D copies are masked from the same token ids. One cluster job per step (Snakemake):

    python -m bigs.data.samples tokenize --input SHARDS/training3.txt --output TOK/training3.npz \\
        [--model_name bert-large-uncased] [--vocab_file V] [--do_lower_case 1]
    python -m bigs.data.samples mask --tokens TOK/training3.npz --copy j --num_shards N \\
        --output OUT/train_shard_{k}.hdf5 --seed S --max_seq_length 128 \\
        --max_predictions_per_seq 20 --masked_lm_prob 0.15 [--short_seq_prob 0.1] [--whole_word_mask]

Numbering (as academic-budget's loop `for copy in range(D): for shard in shards: k += 1`, counted
separately for train and test): text shard i of a split with N text shards (training{i}.txt /
test{i}.txt, i = 0..N-1), copy j = 0..D-1 ->

    k = output_index(i, j, N) = j * N + i          file  {train|test}_shard_{k}.hdf5
    seed of file k = seed + k

Masked copy j of shard i draws its masks and instance order from seed + k. The instances (which
sentences form a sequence, the short_seq_prob draws, the truncation) are drawn once per text shard
from seed + i (= seed of copy 0), so all copies of a shard hold the same token sequences and differ
only in masks and order — the "same token ids" the issue asks for. The token file (tokenize) does
not depend on max_seq_length, so 128/512/1024/4096 variants share it.

Instances: per document, target = max_seq_length - 2, with prob short_seq_prob target =
randint(2, target); whole sentences accumulate until the target is reached; longer sequences lose
tokens at random from the front or the back; [CLS] … [SEP]; segment ids 0.
Masking: candidates = every token but [CLS]/[SEP]; n = min(P, max(1, round(len * p))), len counting
[CLS] and [SEP]; chosen uniformly; each -> 80 % [MASK], 10 % kept, 10 % random id in [0, vocab);
positions ascending, 0-padded.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
from array import array
from bisect import bisect_left
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bigs.errors import atomic_path, cli_main, fail
from bigs.tokenizer import BUNDLED_NAMES, BUNDLED_VOCAB

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # parallelism = --n_processes, one thread each

log = logging.getLogger("bigs.data.samples")
VOCAB_SIZES = {
    "bert-base-uncased": 30522,
    "bert-large-uncased": 30522,
    "bert-base-cased": 28996,
    "bert-large-cased": 28996,
}
SETTINGS = ".bigs-samples.json"
TOKENS_FORMAT = 1
BLOCK = 8192  # instances masked per block (bounds temporaries at large L)


def output_index(shard_index: int, copy: int, num_shards: int) -> int:
    """k of `{split}_shard_{k}.hdf5` for text shard `shard_index` (0..num_shards-1) and dup copy
    `copy`: k = copy * num_shards + shard_index (academic-budget's loop order). Seed = seed + k."""
    if not 0 <= shard_index < num_shards or copy < 0:
        raise ValueError(f"shard_index {shard_index} must be in [0, {num_shards}) and copy {copy} >= 0")
    return copy * num_shards + shard_index


def split_of(name: str) -> str:
    """'train' if the text shard's name says so (training{i}.txt), else 'test' (as academic-budget)."""
    return "train" if "train" in Path(name).name else "test"


def index_of(name: str) -> int | None:
    m = re.search(r"(\d+)\.txt$", Path(name).name)
    return int(m.group(1)) if m else None


# ------------------------------------------------------------------ tokenizer
@dataclass
class Vocab:
    tokenizer: object  # tokenizers.Tokenizer
    size: int
    cls_id: int
    sep_id: int
    mask_id: int
    pad_id: int
    unk_id: int
    md5: str
    name: str
    do_lower_case: bool
    continuation: np.ndarray  # (size,) bool: WordPiece "##" pieces (whole-word masking)


@functools.lru_cache(maxsize=8)  # one load per process, not per text shard
def load_vocab(model_name: str = "bert-large-uncased", vocab_file=None, do_lower_case: bool = True) -> Vocab:
    """WordPiece from a vocab file (bundled for bert-{base,large}-uncased), else a transformers
    tokenizer by name or path (needs the hub unless cached). Asserts the vocab size (REFERENCE §4)."""
    if vocab_file is None and model_name in BUNDLED_NAMES:
        vocab_file = BUNDLED_VOCAB
    if vocab_file is not None:
        from tokenizers import BertWordPieceTokenizer

        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise fail(vocab_file, "--vocab_file", "no such file")
        raw = vocab_file.read_bytes()
        lines = raw.decode("utf-8", "replace").splitlines()
        want = VOCAB_SIZES.get(model_name)
        if want is not None and len(lines) != want:
            raise fail(
                vocab_file,
                "--vocab_file",
                f"vocab of the wrong size: {len(lines)} entries, {model_name} "
                f"has {want} — pass the {model_name} vocab.txt",
            )
        missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t not in lines]
        if missing:
            raise fail(vocab_file, "--vocab_file", f"missing special tokens {missing}: not a BERT WordPiece vocab")
        # BertTokenizerFast(vocab_file=…) silently builds a 5-token vocab in transformers 5 (REFERENCE §4).
        tok = BertWordPieceTokenizer(str(vocab_file), lowercase=bool(do_lower_case))
        size = tok.get_vocab_size()
        if size != len(lines):
            raise fail(
                vocab_file,
                "--vocab_file",
                f"tokenizer has {size} entries but the file {len(lines)} lines (duplicate lines?)",
            )
        v = tok.get_vocab()
        cont = np.zeros(size, dtype=bool)
        cont[[i for t, i in v.items() if t.startswith("##")]] = True
        return Vocab(
            tok._tokenizer,
            size,
            v["[CLS]"],
            v["[SEP]"],
            v["[MASK]"],
            v["[PAD]"],
            v["[UNK]"],
            hashlib.md5(raw).hexdigest(),
            model_name,
            bool(do_lower_case),
            cont,
        )
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(model_name)
    except Exception as exc:  # OSError offline / unknown repo; ValueError for odd configs
        raise fail(
            model_name,
            "--model_name",
            f"cannot load tokenizer ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}) — "
            "offline? pass --vocab_file, or use bert-large-uncased (bundled)",
        ) from None
    if not getattr(hf, "is_fast", False) or hf.mask_token_id is None:
        raise fail(model_name, "--model_name", "needs a fast tokenizer with a mask token")
    size = len(hf)
    v = hf.get_vocab()
    cont = np.zeros(size, dtype=bool)
    cont[[i for t, i in v.items() if t.startswith("##") and i < size]] = True
    pad = hf.pad_token_id if hf.pad_token_id is not None else 0
    unk = hf.unk_token_id if hf.unk_token_id is not None else -1
    md5 = hashlib.md5(json.dumps(sorted(v.items())).encode()).hexdigest()
    return Vocab(
        hf.backend_tokenizer,
        size,
        hf.cls_token_id,
        hf.sep_token_id,
        hf.mask_token_id,
        pad,
        unk,
        md5,
        model_name,
        bool(do_lower_case),
        cont,
    )


# ------------------------------------------------------------------ tokenize (once per text shard)
@dataclass
class Tokens:
    ids: np.ndarray  # (T,) int32, all sentences back to back
    sent_offsets: np.ndarray  # (S+1,) int64 token offsets of sentences
    doc_offsets: np.ndarray  # (D+1,) int64 sentence offsets of documents
    meta: dict  # vocab, special ids, source


def tokenize_file(path, vocab: Vocab, batch_lines: int = 8192) -> Tokens:
    """One sentence per line, blank line between documents (shard_data.py output). Empty
    sentences and documents are dropped (as create_pretraining_data.py)."""
    path = Path(path)
    encode = getattr(vocab.tokenizer, "encode_batch_fast", vocab.tokenizer.encode_batch)
    flat, sent_lens, doc_nsent = array("i"), [], [0]

    def flush(lines, breaks_after):
        # breaks_after[j]: number of blank lines seen after line j (document ends)
        if not lines:
            return
        enc = encode(lines, add_special_tokens=False)
        for e, brk in zip(enc, breaks_after):
            n = len(e.ids)
            if n:
                flat.extend(e.ids)
                sent_lens.append(n)
                doc_nsent[-1] += 1
            if brk and doc_nsent[-1]:
                doc_nsent.append(0)

    try:
        with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
            lines, breaks = [], []
            for line in f:
                line = line.strip()
                if not line:
                    if breaks:
                        breaks[-1] = True
                    elif doc_nsent[-1]:
                        doc_nsent.append(0)
                    continue
                lines.append(line)
                breaks.append(False)
                if len(lines) >= batch_lines:
                    flush(lines, breaks)
                    lines, breaks = [], []
            flush(lines, breaks)
    except OSError as exc:
        raise fail(path, "--input", f"cannot read ({exc})") from None
    if doc_nsent[-1] == 0:
        doc_nsent.pop()
    if not sent_lens:
        raise fail(path, "--input", "no tokens: empty text shard — rerun bigs.data.shard with fewer shards")
    ids = np.frombuffer(flat, dtype=np.int32)
    sent_offsets = np.zeros(len(sent_lens) + 1, dtype=np.int64)
    np.cumsum(sent_lens, out=sent_offsets[1:])
    doc_offsets = np.zeros(len(doc_nsent) + 1, dtype=np.int64)
    np.cumsum(doc_nsent, out=doc_offsets[1:])
    meta = {
        "format": TOKENS_FORMAT,
        "source": path.name,
        "split": split_of(path.name),
        "shard_index": index_of(path.name),
        "model_name": vocab.name,
        "vocab_md5": vocab.md5,
        "do_lower_case": vocab.do_lower_case,
        "vocab_size": vocab.size,
        "cls_id": vocab.cls_id,
        "sep_id": vocab.sep_id,
        "mask_id": vocab.mask_id,
        "pad_id": vocab.pad_id,
        "unk_id": vocab.unk_id,
    }
    return Tokens(ids, sent_offsets, doc_offsets, {**meta, "_continuation": vocab.continuation})


def save_tokens(tokens: Tokens, out) -> Path:
    meta = {k: v for k, v in tokens.meta.items() if not k.startswith("_")}
    buf = io.BytesIO()
    ids = tokens.ids.astype(np.uint16) if tokens.meta["vocab_size"] <= 1 << 16 else tokens.ids  # half the disk
    np.savez(
        buf,
        ids=ids,
        sent_offsets=tokens.sent_offsets,
        doc_offsets=tokens.doc_offsets,
        continuation=tokens.meta["_continuation"],
        meta=np.array(json.dumps(meta)),
    )
    with atomic_path(out, suffix=".npz") as tmp:
        tmp.write_bytes(buf.getvalue())
    return Path(out)


def load_tokens(path) -> Tokens:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            t = Tokens(
                z["ids"].astype(np.int32),
                z["sent_offsets"],
                z["doc_offsets"],
                {**meta, "_continuation": z["continuation"]},
            )
    except FileNotFoundError:
        raise fail(path, "--tokens", "no such file — make it with python -m bigs.data.samples tokenize") from None
    except (OSError, ValueError, KeyError) as exc:
        raise fail(path, "--tokens", f"unreadable token file ({exc}) — rerun bigs.data.samples tokenize") from None
    if meta.get("format") != TOKENS_FORMAT:
        raise fail(path, "--tokens", f"token file format {meta.get('format')}, expected {TOKENS_FORMAT}")
    return t


# ------------------------------------------------------------------ instances (once per text shard)
def make_instances(tokens: Tokens, max_seq_length: int, short_seq_prob: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of each instance's body in tokens.ids (no [CLS]/[SEP]); bodies are
    contiguous because they are whole consecutive sentences, truncated at the front/back."""
    max_num = max_seq_length - 2
    so = tokens.sent_offsets.tolist()
    do = tokens.doc_offsets.tolist()
    n_docs = len(do) - 1
    # one target per document (create_instances_from_document_no_nsp)
    short = rng.random(n_docs) < short_seq_prob
    targets = np.where(short, rng.integers(2, max_num + 1, n_docs), max_num).tolist()
    starts, ends = [], []
    for d in range(n_docs):
        i, last, target = do[d], do[d + 1], targets[d]
        while i < last:
            # first sentence end e (exclusive) whose running length reaches target, or the doc end
            e = min(bisect_left(so, so[i] + target, i + 1, last + 1), last)
            starts.append(so[i])
            ends.append(so[e])
            i = e
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(ends, dtype=np.int64) - starts
    # truncate_single_seq: each removed token comes from the front or back with prob 1/2
    excess = np.maximum(lengths - max_num, 0)
    starts += rng.binomial(excess, 0.5)
    lengths -= excess
    return starts, lengths


# ------------------------------------------------------------------ masking (once per copy)
@dataclass(frozen=True)
class MaskSpec:
    """What shapes a masked copy: academic-budget-bert's instance and masking flags."""

    max_seq_length: int = 512
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    whole_word_mask: bool = False

    def check(self, where="samples") -> None:
        L, P = self.max_seq_length, self.max_predictions_per_seq
        if L < 4:
            raise fail(where, "--max_seq_length", f"{L} is too small (>= 4)")
        if not 1 <= P < L:
            raise fail(where, "--max_predictions_per_seq", f"{P} must be >= 1 and < --max_seq_length {L}")
        if not 0 < self.masked_lm_prob < 1:
            raise fail(where, "--masked_lm_prob", f"{self.masked_lm_prob} must be in (0, 1)")
        if not 0 <= self.short_seq_prob <= 1:
            raise fail(where, "--short_seq_prob", f"{self.short_seq_prob} must be in [0, 1]")


def mask_block(ids, starts, lengths, *, spec: MaskSpec, meta: dict, rng) -> dict:
    """The five arrays for a block of instances."""
    L, P, masked_lm_prob = spec.max_seq_length, spec.max_predictions_per_seq, spec.masked_lm_prob
    n = len(starts)
    pad, cls, sep, mask_id, vocab_size = (meta[k] for k in ("pad_id", "cls_id", "sep_id", "mask_id", "vocab_size"))
    col = np.arange(L - 2)
    body = col < lengths[:, None]  # (n, L-2)
    idx = starts[:, None] + np.minimum(col, lengths[:, None] - 1)
    input_ids = np.full((n, L), pad, dtype=np.int32)
    input_ids[:, 1 : L - 1] = np.where(body, ids[idx], pad)
    rows = np.arange(n)
    input_ids[:, 0] = cls
    input_ids[rows, lengths + 1] = sep
    input_mask = (np.arange(L) < (lengths + 2)[:, None]).astype(np.int8)
    # number to predict: len counts [CLS] and [SEP]; np.rint rounds half to even like Python round
    n_pred = np.minimum(np.minimum(P, np.maximum(1, np.rint((lengths + 2) * masked_lm_prob))), lengths).astype(np.int64)
    if spec.whole_word_mask:
        positions = _whole_word_positions(input_ids, lengths, n_pred, P, meta["_continuation"], rng)
    else:
        # a uniform random subset of size n_pred: the n_pred smallest of iid keys over candidates 1..len
        keys = rng.random((n, L), dtype=np.float32)
        keys[~np.pad(body, ((0, 0), (1, 1)))] = 2.0
        part = np.argpartition(keys, P - 1, axis=1)[:, :P]
        part = np.take_along_axis(part, np.argsort(np.take_along_axis(keys, part, 1), axis=1), 1)
        chosen = np.arange(P) < n_pred[:, None]
        positions = np.sort(np.where(chosen, part, L), axis=1)  # ascending, padding last
        positions[positions == L] = 0
    real = positions != 0
    r, c = np.nonzero(real)
    p = positions[r, c]
    original = input_ids[r, p]
    masked_lm_ids = np.zeros((n, P), dtype=np.int32)
    masked_lm_ids[r, c] = original
    # 80 % [MASK], 10 % unchanged, 10 % random vocab id (create_masked_lm_predictions)
    u1, u2 = rng.random(len(p)), rng.random(len(p))
    rand = rng.integers(0, vocab_size, len(p))
    input_ids[r, p] = np.where(u1 < 0.8, mask_id, np.where(u2 < 0.5, original, rand))
    return {
        "input_ids": input_ids,
        "input_mask": input_mask,
        "segment_ids": np.zeros((n, L), dtype=np.int8),
        "masked_lm_positions": positions.astype(np.int32),
        "masked_lm_ids": masked_lm_ids,
    }


def _whole_word_positions(input_ids, lengths, n_pred, P, continuation, rng) -> np.ndarray:
    """Google BERT's whole-word masking: shuffle words (a piece plus its ## pieces), take whole
    words while they fit in n_pred."""
    out = np.zeros((len(lengths), P), dtype=np.int64)
    for i, (ln, k) in enumerate(zip(lengths.tolist(), n_pred.tolist())):
        cont = continuation[input_ids[i, 1 : ln + 1]]
        words, cur = [], []
        for pos, c in enumerate(cont.tolist(), start=1):
            if c and cur:
                cur.append(pos)
            else:
                cur = [pos]
                words.append(cur)
        chosen = []
        for w in rng.permutation(len(words)).tolist():
            if len(chosen) >= k:
                break
            if len(chosen) + len(words[w]) > k:
                continue
            chosen += words[w]
        chosen.sort()
        out[i, : len(chosen)] = chosen
    return out


def mask_copy(tokens: Tokens, starts, lengths, spec: MaskSpec, seed: int) -> dict:
    """All instances of one copy, shuffled, masked with Generator(seed)."""
    rng = np.random.default_rng([seed, 1])  # stream 1: masking (stream 0 draws instances)
    perm = rng.permutation(len(starts))
    starts, lengths = starts[perm], lengths[perm]
    parts = [
        mask_block(tokens.ids, starts[b : b + BLOCK], lengths[b : b + BLOCK], spec=spec, meta=tokens.meta, rng=rng)
        for b in range(0, len(starts), BLOCK)
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def write_copies(
    tokens: Tokens, out_dir, *, shard_index: int, num_shards: int, copies, seed: int, spec: MaskSpec, output=None
) -> list[Path]:
    """Mask and write copies `copies` of one tokenized text shard; return the written paths."""
    spec.check(tokens.meta["source"])
    if seed < 0:
        raise fail(tokens.meta["source"], "--seed", "must be >= 0")
    if spec.whole_word_mask and not tokens.meta["_continuation"].any():
        raise fail(tokens.meta["source"], "--whole_word_mask", "needs a WordPiece vocab (## pieces)")
    split = tokens.meta["split"]
    # instances: once per text shard, from the seed of copy 0 (seed + i), stream 0
    starts, lengths = make_instances(
        tokens,
        spec.max_seq_length,
        spec.short_seq_prob,
        np.random.default_rng([seed + output_index(shard_index, 0, num_shards), 0]),
    )
    written = []
    for j in copies:
        k = output_index(shard_index, j, num_shards)
        path = Path(output) if output is not None else Path(out_dir) / f"{split}_shard_{k}.hdf5"
        arrays = mask_copy(tokens, starts, lengths, spec, seed + k)
        attrs = {
            "generator": "bigs.data.samples",
            "source": tokens.meta["source"],
            "k": k,
            "copy": j,
            "shard_index": shard_index,
            "num_shards": num_shards,
            "seed": seed + k,
            **asdict(spec),
            "model_name": tokens.meta["model_name"],
            "vocab_md5": tokens.meta["vocab_md5"],
            "do_lower_case": bool(tokens.meta["do_lower_case"]),
        }
        from bigs.data.format import write_shard

        written.append(write_shard(path, attrs=attrs, **arrays))
        log.info("%s: %d instances (%s copy %d, seed %d)", path, len(starts), tokens.meta["source"], j, seed + k)
    return written


# ------------------------------------------------------------------ the academic-budget form
def text_shards(d: Path) -> dict[str, list[Path]]:
    """Text shards by split, ordered by their number (training0, training1, … as shard_data.py names them)."""
    if not d.is_dir():
        raise fail(d, "--dir", "no such directory")
    files = [p for p in d.iterdir() if p.is_file() and ".txt" in p.name and not p.name.startswith(".")]
    if not files:
        raise fail(d, "--dir", "no .txt text shards — make them with python -m bigs.data.shard")
    out = {"train": [], "test": []}
    for p in files:
        out[split_of(p.name)].append(p)
    for v in out.values():
        v.sort(key=lambda p: (index_of(p.name) if index_of(p.name) is not None else 1 << 62, p.name))
    return out


def _job(args):
    path, out_dir, i, n, settings, vocab_args = args
    vocab = load_vocab(**vocab_args)
    tokens = tokenize_file(path, vocab)
    spec = MaskSpec(**{f: settings[f] for f in MaskSpec.__dataclass_fields__})
    return write_copies(
        tokens,
        out_dir,
        shard_index=i,
        num_shards=n,
        copies=range(settings["dup_factor"]),
        seed=settings["seed"],
        spec=spec,
    )


def generate(
    text_dir,
    out_dir,
    *,
    dup_factor: int = 1,
    seed: int = 555,
    vocab_file=None,
    do_lower_case: bool = True,
    model_name: str = "bert-large-uncased",
    n_processes: int = 1,
    overwrite: bool = False,
    **mask,
) -> list[Path]:
    """Every text shard in `text_dir` -> dup_factor hdf5 shards in `out_dir`. `mask`: MaskSpec's
    fields (max_seq_length, max_predictions_per_seq, masked_lm_prob, short_seq_prob, whole_word_mask)."""
    text_dir, out_dir = Path(text_dir), Path(out_dir)
    spec = MaskSpec(**mask)
    spec.check(text_dir)
    if dup_factor < 1:
        raise fail(text_dir, "--dup_factor", "must be >= 1")
    if n_processes < 1:
        raise fail(text_dir, "--n_processes", "must be >= 1")
    shards = text_shards(text_dir)
    vocab_args = {"model_name": model_name, "vocab_file": vocab_file, "do_lower_case": bool(do_lower_case)}
    vocab = load_vocab(**vocab_args)  # fail fast, in the parent
    settings = {
        "dup_factor": dup_factor,
        "seed": seed,
        **asdict(spec),
        "vocab_md5": vocab.md5,
        "do_lower_case": bool(do_lower_case),
        "model_name": model_name,
        "inputs": {p.name: p.stat().st_size for v in shards.values() for p in v},
    }
    _check_output(out_dir, settings, overwrite)
    jobs = [(p, out_dir, i, len(v), settings, vocab_args) for v in shards.values() for i, p in enumerate(v)]
    out_dir.mkdir(parents=True, exist_ok=True)
    if n_processes == 1 or len(jobs) == 1:
        written = [w for job in jobs for w in _job(job)]
    else:
        with multiprocessing.get_context("fork").Pool(min(n_processes, len(jobs)), maxtasksperchild=1) as pool:
            written = [w for ws in pool.imap_unordered(_job, jobs) for w in ws]
    with atomic_path(out_dir / SETTINGS) as tmp:
        tmp.write_text(json.dumps(settings, indent=1, sort_keys=True))
    return sorted(written)


def _check_output(out: Path, settings: dict, overwrite: bool) -> None:
    if overwrite or not out.is_dir():
        return
    old = out / SETTINGS
    has_shards = any(p.suffix == ".hdf5" for p in out.iterdir())
    if old.is_file():
        prev = json.loads(old.read_text())
        if prev != settings:
            diff = sorted(k for k in set(prev) | set(settings) if prev.get(k) != settings.get(k))
            raise fail(
                out,
                "-o",
                f"holds shards made with different settings ({', '.join(diff)}) — choose "
                "another directory or pass --overwrite",
            )
    elif has_shards:
        raise fail(out, "-o", "holds .hdf5 shards of unknown settings — choose another directory or pass --overwrite")


# ------------------------------------------------------------------ CLI
def _add_model_args(p):
    p.add_argument("--vocab_file", default=None, help="WordPiece vocab.txt (default: bundled for bert-*-uncased)")
    p.add_argument("--do_lower_case", type=int, default=1, help="1 = lower case (uncased models), 0 = keep case")
    p.add_argument(
        "--model_name",
        default="bert-large-uncased",
        help="bert-large-uncased / bert-base-uncased (bundled vocab) or a transformers tokenizer name/path",
    )


def mask_spec(a: argparse.Namespace) -> MaskSpec:
    """MaskSpec from the parsed flags of _add_mask_args."""
    return MaskSpec(**{f: getattr(a, f) for f in MaskSpec.__dataclass_fields__})


def _add_mask_args(p, max_seq_length_default=512):
    p.add_argument("--masked_lm_prob", type=float, default=0.15)
    p.add_argument("--max_seq_length", type=int, default=max_seq_length_default)
    p.add_argument("--max_predictions_per_seq", type=int, default=20)
    p.add_argument("--short_seq_prob", type=float, default=0.1)
    p.add_argument("--whole_word_mask", action="store_true")


def main(argv=None):
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in ("tokenize", "mask"):
        return {"tokenize": main_tokenize, "mask": main_mask}[argv[0]](argv[1:])
    p = argparse.ArgumentParser(prog="python -m bigs.data.samples", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", required=True, help="text shards (training{i}.txt, test{i}.txt)")
    p.add_argument("-o", required=True, help="output directory")
    p.add_argument("--dup_factor", type=int, default=1, help="masked copies per text shard")
    p.add_argument("--seed", type=int, default=555)
    p.add_argument("--n_processes", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--overwrite", action="store_true", help="write into a dir made with other settings")
    _add_model_args(p)
    _add_mask_args(p)
    a = p.parse_args(argv)
    for w in generate(
        a.dir,
        a.o,
        dup_factor=a.dup_factor,
        seed=a.seed,
        vocab_file=a.vocab_file,
        do_lower_case=bool(a.do_lower_case),
        model_name=a.model_name,
        n_processes=a.n_processes,
        overwrite=a.overwrite,
        **asdict(mask_spec(a)),
    ):
        print(w)


def main_tokenize(argv) -> None:
    """`python -m bigs.data.samples tokenize`: one text shard -> its token file (one cluster job)."""
    p = argparse.ArgumentParser(
        prog="python -m bigs.data.samples tokenize", description="Tokenize one text shard once -> .npz token file"
    )
    p.add_argument("--input", required=True, help="text shard, e.g. SHARDS/training3.txt")
    p.add_argument("--output", required=True, help="token file, e.g. TOK/training3.npz")
    _add_model_args(p)
    a = p.parse_args(argv)
    vocab = load_vocab(a.model_name, a.vocab_file, bool(a.do_lower_case))
    t = tokenize_file(a.input, vocab)
    save_tokens(t, a.output)
    log.info(
        "%s: %d tokens, %d sentences, %d documents",
        a.output,
        len(t.ids),
        len(t.sent_offsets) - 1,
        len(t.doc_offsets) - 1,
    )


def main_mask(argv) -> None:
    """`python -m bigs.data.samples mask`: copy j of one token file -> one hdf5 shard (one cluster job)."""
    p = argparse.ArgumentParser(
        prog="python -m bigs.data.samples mask",
        description="Mask copy j of one tokenized text shard -> {split}_shard_{k}.hdf5",
    )
    p.add_argument("--tokens", required=True, help="token file from `tokenize`")
    p.add_argument("--output", required=True, help="hdf5 path; its name should be {split}_shard_{k}.hdf5")
    p.add_argument("--copy", type=int, required=True, help="dup copy j in 0..dup_factor-1")
    p.add_argument("--num_shards", type=int, required=True, help="number N of text shards in this split")
    p.add_argument("--shard_index", type=int, default=None, help="i (default: from the text shard's name)")
    p.add_argument("--seed", type=int, default=555, help="base seed; file k uses seed + k")
    _add_mask_args(p)
    a = p.parse_args(argv)
    t = load_tokens(a.tokens)
    i = a.shard_index if a.shard_index is not None else t.meta.get("shard_index")
    if i is None:
        raise fail(a.tokens, "--shard_index", "not given and not in the text shard's name")
    if not 0 <= i < a.num_shards:
        raise fail(a.tokens, "--shard_index", f"{i} not in [0, --num_shards {a.num_shards})")
    if a.copy < 0:
        raise fail(a.tokens, "--copy", "must be >= 0")
    k = output_index(i, a.copy, a.num_shards)
    m = re.fullmatch(r"(train|test)_shard_(\d+)\.hdf5", Path(a.output).name)
    if m and (int(m.group(2)) != k or m.group(1) != t.meta["split"]):
        raise fail(
            a.output,
            "--output",
            f"name does not match {t.meta['split']}_shard_{k}.hdf5 "
            f"(k = copy {a.copy} * num_shards {a.num_shards} + shard_index {i})",
        )
    write_copies(
        t,
        None,
        shard_index=i,
        num_shards=a.num_shards,
        copies=[a.copy],
        seed=a.seed,
        spec=mask_spec(a),
        output=a.output,
    )


if __name__ == "__main__":
    cli_main(main, output_flag="--output/-o")
