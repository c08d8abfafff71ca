"""bigs.data.process at corpus size: files are streamed in bounded chunks, so memory
does not grow with a file's size, and the output is the same for any chunking and process count.
The figures themselves come from benchmarks/bench_scale.py (not a test)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bigs.data import process as proc


def test_chunked_streaming_gives_the_same_articles(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    arts = [f"article {i} " + " ".join(f"w{i}x{j}" for j in range(i % 37 + 1)) for i in range(500)]
    # blank lines of whitespace, CRLF, a BOM, a bad byte, runs of blank lines, no final newline
    body = "\ufeff" + "\r\n \t\r\n".join(a.replace(" w", "\r\nw", 1) for a in arts[:250]) + "\n\n\n\n"
    (src / "a.txt").write_bytes(body.encode() + b"bad \xff byte\n\n" + "\n\n".join(arts[250:]).encode())
    want = [proc.clean(a) for a in arts[:250]] + ["bad \ufffd byte"] + [proc.clean(a) for a in arts[250:]]
    outs = []
    for chunk, n in ((1 << 22, 1), (200, 2), (1, 2)):
        monkeypatch.setattr(proc, "CHUNK_CHARS", chunk)
        out = proc.process(src, tmp_path / f"out-{chunk}-{n}", "text", n_processes=n)
        outs.append(out.read_text())
    assert outs[0] == outs[1] == outs[2] == "".join(a + "\n\n" for a in want)


@pytest.mark.slow
def test_memory_does_not_grow_with_the_file(tmp_path):
    """One 40 MB text file: peak RSS ≈ 33 MB, where holding the file (decoded, split, cleaned) took
    138 MB before the streaming reader."""
    src = tmp_path / "big.txt"
    para = ("The quick brown fox jumps over the lazy dog. " * 40 + "\n\n").encode()
    with open(src, "wb") as f:
        for _ in range(40 * 2**20 // len(para)):
            f.write(para)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked (big) pytest process
    code = (
        "from bigs.data.process import process; "
        f"process({str(src)!r}, {str(tmp_path / 'out')!r}, 'text', 1); "
        "print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    peak_mb = int(r.stdout.split()[-1]) / 1024
    assert peak_mb < 80, f"peak RSS {peak_mb:.0f} MB for a 40 MB file"
    assert (tmp_path / "out" / "text_one_article_per_line.txt").stat().st_size > 39 * 2**20
