"""Raw text -> one article per line (academic-budget-bert `process_data.py`, REFERENCE.md §3).

    python -m bigs.data.process -f enwiki.xml.bz2 -o OUT --type wiki [--n_processes 16]
    python -m bigs.data.process -f books/ -o OUT --type bookcorpus
    python -m bigs.data.process -f texts/ -o OUT --type text     # articles separated by blank lines

Writes OUT/<type>_one_article_per_line.txt: one article per line, a blank line after each
(as the original). wiki: wikiextractor >= 3.1.0 (older crashes on Python 3.11), title line
dropped. bookcorpus: each .txt file under the tree is one article. Every article is NFC-normalised,
control/format characters are removed, whitespace collapsed; empty articles are dropped; invalid
UTF-8 is replaced (U+FFFD) and counted in the log.
"""

from __future__ import annotations

import argparse
import bz2
import codecs
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
        text = "".join(c if c.isspace() or unicodedata.category(c) not in ("Cc", "Cf") else ""
                       for c in text)
    return _WS.sub(" ", text).strip()


def read_text(path: Path) -> tuple[str, int]:
    """File contents (utf-8, BOM dropped, bad bytes replaced) and the number of bad bytes."""
    global _bad_bytes
    _bad_bytes = 0
    text = path.read_bytes().decode("utf-8-sig", errors="bigs_count")
    return text, _bad_bytes


def articles_from_text(text: str) -> list[str]:
    """Articles separated by blank lines; lines of one article joined with a space."""
    return [a for a in (clean(block) for block in re.split(r"\n\s*\n", text)) if a]


def _text_file(path: Path) -> tuple[list[str], int]:
    text, bad = read_text(path)
    return articles_from_text(text), bad


def _book_file(path: Path) -> tuple[list[str], int]:
    text, bad = read_text(path)
    book = clean(text)
    return ([book] if book else []), bad


def _wiki_file(path: Path) -> tuple[list[str], int]:
    """wikiextractor output: <doc ...>\\nTitle\\n\\nbody…\\n</doc>; title dropped."""
    text, bad = read_text(path)
    out = []
    for body in re.findall(r"<doc [^>]*>\n(.*?)</doc>", text, flags=re.S):
        lines = body.split("\n", 1)
        article = clean(lines[1]) if len(lines) > 1 else ""
        if article:
            out.append(article)
    return out, bad


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
    cmd = [sys.executable, "-m", "wikiextractor.WikiExtractor", str(dump), "-b", "100M",
           "--processes", str(n_processes), "-o", str(out_dir)]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise fail(dump, "-f", f"wikiextractor failed ({last}) — a corrupt/truncated dump? download it again; "
                   "wikiextractor must be >= 3.1.0")


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
            files, reader = sorted(p for p in Path(tmp).rglob("wiki_*") if p.is_file()), _wiki_file
        else:
            files = input_files(src, kind)
            reader = _book_file if kind == "bookcorpus" else _text_file
        n_articles = bad = 0
        with atomic_path(out) as tmp_out, open(tmp_out, "w", encoding="utf-8", newline="\n") as f:
            with multiprocessing.Pool(n_processes) if n_processes > 1 and len(files) > 1 else _Serial() as pool:
                for path, (articles, nbad) in zip(files, pool.imap(reader, files)):
                    if nbad:
                        log.warning("%s: %d invalid UTF-8 byte(s) replaced with U+FFFD", path, nbad)
                    bad += nbad
                    n_articles += len(articles)
                    f.writelines(a + "\n\n" for a in articles)
            if n_articles == 0:
                raise fail(src, "-f", "empty corpus: no non-empty articles found")
    log.info("%s: %d articles from %d file(s), %d invalid UTF-8 byte(s) replaced", out, n_articles, len(files), bad)
    return out


class _Serial:
    """Pool stand-in for one process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, fn, items):
        return map(fn, items)


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
