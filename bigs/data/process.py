"""Raw text -> one article per line (academic-budget-bert `process_data.py`, REFERENCE.md §3).

    python -m bigs.data.process -f enwiki.xml.bz2 -o OUT --type wiki [--n_processes 16]
    python -m bigs.data.process -f books/ -o OUT --type bookcorpus
    python -m bigs.data.process -f texts/ -o OUT --type text     # articles separated by blank lines

Writes OUT/<type>_one_article_per_line.txt: one article per line, a blank line after each
(as the original). Files are streamed: articles are read in chunks of ≈CHUNK_CHARS characters and
cleaned by n_processes workers with a bounded number of chunks in flight, so memory stays flat
however large a file or the corpus is (a whole file used to be held, ≈5× its size, per
worker), and one big file is cleaned in parallel too. wiki: wikiextractor >= 3.1.0 (older crashes on Python 3.11), title line
dropped. bookcorpus: each .txt file under the tree is one article. Every article is NFC-normalised,
control/format characters are removed, whitespace collapsed; empty articles are dropped; invalid
UTF-8 is replaced (U+FFFD) and counted in the log.
"""

from __future__ import annotations

import argparse
import bz2
import codecs
import collections
import logging
import multiprocessing
import re
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

from bigs.errors import atomic_path, cli_main, fail

log = logging.getLogger("bigs.data.process")
TYPES = ("wiki", "bookcorpus", "text")

# Invalid UTF-8 is replaced, never fatal; the handler counts the bad bytes.
_bad_bytes = 0


def _count_and_replace(exc: UnicodeDecodeError):
    global _bad_bytes
    _bad_bytes += exc.end - exc.start
    return "\ufffd", exc.end


codecs.register_error("bigs_count", _count_and_replace)

_WS = re.compile(r"\s+")


def clean(text: str) -> str:
    """NFC, drop control (Cc, except whitespace) and format (Cf) characters, collapse whitespace."""
    text = unicodedata.normalize("NFC", text)
    if not text.isprintable():  # fast path: most lines need no per-character pass
        text = "".join(c if c.isspace() or unicodedata.category(c) not in ("Cc", "Cf") else "" for c in text)
    return _WS.sub(" ", text).strip()


CHUNK_CHARS = 4 << 20  # raw characters per worker task; 2 × n_processes tasks in flight at most


def _open_text(path: Path):
    """utf-8, BOM dropped, bad bytes replaced (and counted); lines split at \\n only."""
    return open(path, encoding="utf-8-sig", errors="bigs_count", newline="\n")


_BLANK_LINES = re.compile(r"\n\s*\n")


def _raw_text_articles(path: Path):
    """Articles separated by blank (whitespace-only) lines, as raw blocks, read CHUNK_CHARS at a
    time; a separator cut by a read boundary is found once the next read is appended."""
    tail = ""
    with _open_text(path) as f:
        while block := f.read(CHUNK_CHARS):
            parts = _BLANK_LINES.split(tail + block)
            tail = parts.pop()  # may go on in the next read
            yield from parts
    if tail:
        yield tail


def _raw_wiki_articles(path: Path):
    """wikiextractor output: <doc ...>\\nTitle\\n\\nbody…\\n</doc>: the body without the title, streamed."""
    body = None
    with _open_text(path) as f:
        for line in f:
            if body is None:
                if line.startswith("<doc ") and line.rstrip("\n").endswith(">"):
                    body = []
            elif "</doc>" in line:
                body.append(line[: line.index("</doc>")])
                text = "".join(body)
                yield text.split("\n", 1)[1] if "\n" in text else ""  # title line dropped
                body = None
            else:
                body.append(line)


def _raw_book(path: Path):
    """A book is one article (books are small files)."""
    with _open_text(path) as f:
        yield f.read()


RAW_READERS = {"text": _raw_text_articles, "wiki": _raw_wiki_articles, "bookcorpus": _raw_book}


def clean_articles(raw: list[str]) -> list[str]:
    """Worker task: clean a chunk of raw articles, dropping empty ones."""
    return [a for a in map(clean, raw) if a]


def raw_chunks(files: list[Path], kind: str):
    """(path, chunk of raw articles, bad bytes so far in that file) of every file, ≈CHUNK_CHARS each."""
    global _bad_bytes
    for path in files:
        _bad_bytes = 0
        chunk, size = [], 0
        for raw in RAW_READERS[kind](path):
            chunk.append(raw)
            size += len(raw)
            if size >= CHUNK_CHARS:
                yield path, chunk, None
                chunk, size = [], 0
        yield path, chunk, _bad_bytes  # the file's last chunk (maybe empty) carries its bad-byte count


def check_bz2(path: Path) -> None:
    """Catch a corrupt or truncated dump before wikiextractor spends hours on it: decode the start."""
    try:
        with bz2.open(path, "rb") as f:
            f.read(1 << 20)
    except (OSError, EOFError) as exc:
        raise fail(path, "-f", f"corrupt .bz2 ({exc}) — download the dump again") from None


def run_wikiextractor(dump: Path, out_dir: Path, n_processes: int) -> None:
    if dump.suffix == ".bz2":
        check_bz2(dump)
    cmd = [
        sys.executable,
        "-m",
        "wikiextractor.WikiExtractor",
        str(dump),
        "-b",
        "100M",
        "--processes",
        str(n_processes),
        "-o",
        str(out_dir),
    ]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise fail(
            dump,
            "-f",
            f"wikiextractor failed ({last}) — a corrupt/truncated dump? download it again; "
            "wikiextractor must be >= 3.1.0",
        )


def input_files(src: Path, kind: str) -> list[Path]:
    if not src.exists():
        raise fail(src, "-f", "no such file or directory")
    if src.is_file():
        return [src]
    files = sorted(p for p in src.rglob("*.txt") if p.is_file())
    if not files:
        raise fail(src, "-f", f"no .txt files in the directory (--type {kind})")
    return files


def process(src, out_dir, kind: str, n_processes: int = 1) -> Path:
    """Run one stage; return the written file."""
    src, out_dir = Path(src), Path(out_dir)
    if kind not in TYPES:
        raise fail(src, "--type", f"unknown type {kind!r}; choose one of {', '.join(TYPES)}")
    out = out_dir / f"{kind}_one_article_per_line.txt"
    out_dir.mkdir(parents=True, exist_ok=True)  # extraction of a full dump needs the output disk, not /tmp
    with tempfile.TemporaryDirectory(prefix=".tmp-extract-", dir=out_dir) as tmp:
        if kind == "wiki":
            if not src.is_file():
                raise fail(src, "-f", "expected a Wikipedia XML dump (.xml or .xml.bz2)")
            run_wikiextractor(src, Path(tmp), n_processes)
            files = sorted(p for p in Path(tmp).rglob("wiki_*") if p.is_file())
        else:
            files = input_files(src, kind)
        n_articles = bad = 0
        with atomic_path(out) as tmp_out, open(tmp_out, "w", encoding="utf-8", newline="\n") as f:
            with multiprocessing.Pool(n_processes) if n_processes > 1 else _Serial() as pool:
                pending = collections.deque()  # in order; bounded so reading never runs far ahead

                def drain(keep: int) -> None:
                    nonlocal n_articles, bad
                    while len(pending) > keep:
                        path, result, nbad = pending.popleft()
                        articles = result.get()
                        n_articles += len(articles)
                        f.writelines(a + "\n\n" for a in articles)
                        if nbad:
                            log.warning("%s: %d invalid UTF-8 byte(s) replaced with U+FFFD", path, nbad)
                            bad += nbad

                for path, chunk, nbad in raw_chunks(files, kind):
                    pending.append((path, pool.apply_async(clean_articles, (chunk,)), nbad))
                    drain(keep=2 * n_processes)
                drain(keep=0)
            if n_articles == 0:
                raise fail(src, "-f", "empty corpus: no non-empty articles found")
    log.info("%s: %d articles from %d file(s), %d invalid UTF-8 byte(s) replaced", out, n_articles, len(files), bad)
    return out


class _Serial:
    """Pool stand-in for one process."""

    class _Done:
        def __init__(self, value):
            self.value = value

        def get(self):
            return self.value

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def apply_async(self, fn, args):
        return self._Done(fn(*args))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-f", required=True, help="Wikipedia XML dump (.xml/.bz2), bookcorpus dir, or text file/dir")
    p.add_argument("-o", required=True, help="output directory")
    p.add_argument("--type", required=True, help="wiki | bookcorpus | text")
    p.add_argument("--n_processes", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.n_processes < 1:
        raise fail(args.f, "--n_processes", "must be >= 1")
    print(process(args.f, args.o, args.type, args.n_processes))


if __name__ == "__main__":
    cli_main(main, output_flag="-o")
