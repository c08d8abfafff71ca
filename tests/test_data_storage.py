"""bigs.data.storage / fetch: gs:// against gcp-storage-emulator, http(s) from a local server,
local dirs, Google Drive limits, retries, checksums, resume."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from bigs.data import storage
from bigs.data.fetch import fetch
from bigs.data.format import FIELDS, list_shards, read_shard
from bigs.errors import BigsError


@pytest.fixture
def shard_files(wiki_samples_dir, tmp_path) -> Path:
    """Three real shards in a fresh dir."""
    d = tmp_path / "src"
    d.mkdir()
    for n in ("train_shard_0.hdf5", "train_shard_1.hdf5", "test_shard_0.hdf5"):
        shutil.copy(wiki_samples_dir / n, d / n)
    return d


@pytest.fixture
def http_dir(tmp_path):
    """Serve a directory on 127.0.0.1 (python http.server); yields (url, dir)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/", root
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv("BIGS_RETRIES", "3")
    monkeypatch.setenv("BIGS_RETRY_BACKOFF", "0.05")
    monkeypatch.setenv("BIGS_NET_TIMEOUT", "3")


def upload_dir(local: Path, uri: str):
    for p in sorted(local.iterdir()):
        storage.upload(p, f"{uri.rstrip('/')}/{p.name}")


def same_arrays(a: Path, b: Path):
    x, y = read_shard(a), read_shard(b)
    for k in FIELDS:
        np.testing.assert_array_equal(x[k], y[k])


@pytest.mark.gcs
def test_gcs_fetch_list_and_stream(gcs_bucket, shard_files, tmp_path):
    gcs_bucket("corpus")
    upload_dir(shard_files, "gs://corpus/hdf5/wiki")
    remote = storage.list_files("gs://corpus/hdf5/wiki")
    assert [f.name for f in remote] == ["test_shard_0.hdf5", "train_shard_0.hdf5", "train_shard_1.hdf5"]
    assert all(f.md5 == storage.md5_file(shard_files / f.name) for f in remote)
    # the trainer's view: list gs:// shards, stream one through a cache dir
    uris = list_shards("gs://corpus/hdf5/wiki", "train")
    assert uris == ["gs://corpus/hdf5/wiki/train_shard_0.hdf5", "gs://corpus/hdf5/wiki/train_shard_1.hdf5"]
    cache = tmp_path / "cache"
    with storage.local_copy(uris[1], cache) as p:
        same_arrays(p, shard_files / "train_shard_1.hdf5")
    assert not p.exists()
    # CLI fetch, then a rerun skips everything (resumable)
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "bigs.data.fetch", "--source", "gs://corpus/hdf5/wiki", "--output", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "3 to fetch" in r.stderr
    for n in ("train_shard_0.hdf5", "train_shard_1.hdf5", "test_shard_0.hdf5"):
        assert (out / n).read_bytes() == (shard_files / n).read_bytes()
    r = subprocess.run(
        [sys.executable, "-m", "bigs.data.fetch", "--source", "gs://corpus/hdf5/wiki", "--output", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "0 to fetch" in r.stderr
    # a locally damaged file is detected by md5 and fetched again
    (out / "train_shard_1.hdf5").write_bytes(b"garbage")
    fetch("gs://corpus/hdf5/wiki", out)
    assert (out / "train_shard_1.hdf5").read_bytes() == (shard_files / "train_shard_1.hdf5").read_bytes()


@pytest.mark.gcs
def test_gcs_emulator_stopped_mid_download(gcs_bucket, gcs_emulator, shard_files, tmp_path, monkeypatch, fast_retries):
    gcs_bucket("corpus")
    upload_dir(shard_files, "gs://corpus/p")
    calls, listed = [], []
    real_client, real_list = storage.gcs_client, storage._list_gcs

    def client_then_stop():
        if listed:  # the listing worked; the server dies when the download starts
            calls.append(1)
            gcs_emulator.stop()
        return real_client()

    def list_one(uri):
        files = real_list(uri)[:1]
        listed.append(1)
        return files

    monkeypatch.setattr(storage, "_list_gcs", list_one)
    monkeypatch.setattr(storage, "gcs_client", client_then_stop)
    out = tmp_path / "out"
    with pytest.raises(BigsError) as e:
        fetch("gs://corpus/p", out, n_threads=1)
    msg = str(e.value)
    assert "gs://corpus/p/test_shard_0.hdf5: download: failed after 3 attempt(s)" in msg
    assert len(calls) == 3  # bounded retries
    assert [p.name for p in out.iterdir()] == [".bigs-fetch.json"]  # no partial or temp file


@pytest.mark.gcs
def test_gcs_checksum_mismatch_removes_file(gcs_bucket, shard_files, tmp_path):
    gcs_bucket("corpus")
    upload_dir(shard_files, "gs://corpus/p")
    dest = tmp_path / "d" / "train_shard_0.hdf5"
    with pytest.raises(BigsError, match=r"train_shard_0\.hdf5: md5: checksum mismatch.*expected 0{32}"):
        storage.download("gs://corpus/p/train_shard_0.hdf5", dest, md5="0" * 32)
    assert list(dest.parent.iterdir()) == []


def test_http_fetch_with_md5sums_and_mismatch(http_dir, shard_files, tmp_path):
    url, root = http_dir
    for p in shard_files.iterdir():
        shutil.copy(p, root / p.name)
    (root / "README.txt").write_text("not a shard")
    out = tmp_path / "out"
    got = fetch(url, out)
    assert sorted(p.name for p in got) == ["test_shard_0.hdf5", "train_shard_0.hdf5", "train_shard_1.hdf5"]
    for p in got:
        assert p.read_bytes() == (shard_files / p.name).read_bytes()
    assert not (out / "README.txt").exists()
    # a single-file URL
    one = fetch(url + "train_shard_1.hdf5", tmp_path / "one")
    assert [p.name for p in one] == ["train_shard_1.hdf5"]
    # MD5SUMS with a wrong sum -> error naming the file; the bad file is removed
    good = storage.md5_file(root / "train_shard_0.hdf5")
    (root / "MD5SUMS").write_text(f"{'f' * 32}  train_shard_0.hdf5\n{good}  nothing.hdf5\n")
    with pytest.raises(BigsError, match=r"train_shard_0\.hdf5: md5: checksum mismatch"):
        fetch(url, tmp_path / "bad", n_threads=1)
    assert not (tmp_path / "bad" / "train_shard_0.hdf5").exists()
    assert not [p for p in (tmp_path / "bad").iterdir() if p.name.startswith(".tmp")]


def test_http_manifest_records_then_verifies(http_dir, shard_files, tmp_path):
    url, root = http_dir
    shutil.copy(shard_files / "test_shard_0.hdf5", root / "test_shard_0.hdf5")
    out = tmp_path / "out"
    fetch(url, out)
    import json

    m = json.loads((out / ".bigs-fetch.json").read_text())["files"]
    assert m["test_shard_0.hdf5"]["md5"] == storage.md5_file(shard_files / "test_shard_0.hdf5")
    mtime = (out / "test_shard_0.hdf5").stat().st_mtime_ns
    fetch(url, out)  # verified against the manifest: not downloaded again
    assert (out / "test_shard_0.hdf5").stat().st_mtime_ns == mtime


def test_http_server_down_bounded_retries(tmp_path, fast_retries):
    from conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(BigsError, match=r"http: failed after 3 attempt\(s\)"):
        fetch(url, tmp_path / "out")


def test_local_source_and_invalid_shard_rejected(shard_files, tmp_path):
    out = tmp_path / "out"
    fetch(str(shard_files), out)
    assert sorted(p.name for p in out.glob("*.hdf5")) == [
        "test_shard_0.hdf5",
        "train_shard_0.hdf5",
        "train_shard_1.hdf5",
    ]
    bad_src = tmp_path / "bad"
    bad_src.mkdir()
    data = (shard_files / "train_shard_0.hdf5").read_bytes()
    (bad_src / "train_shard_9.hdf5").write_bytes(data[: len(data) // 3])
    with pytest.raises(BigsError, match=r"train_shard_9\.hdf5: file: unreadable hdf5"):
        fetch(str(bad_src), tmp_path / "out2")
    assert not (tmp_path / "out2" / "train_shard_9.hdf5").exists()
    with pytest.raises(BigsError, match="no shard files"):
        fetch(str(tmp_path / "out2"), tmp_path / "out3")


def test_gdrive_listing_limit_is_a_clear_error(monkeypatch, tmp_path):
    import gdown

    class E:
        def __init__(self, i, path):
            self.id, self.path = f"id{i}", path

    monkeypatch.setattr(gdown, "download_folder", lambda **kw: [E(i, f"hdf5/train_shard_{i}.hdf5") for i in range(50)])
    with pytest.raises(BigsError) as e:
        fetch("https://drive.google.com/drive/folders/abc", tmp_path / "out")
    assert "--source: Google Drive lists only 50 files per folder" in str(e.value) and "gs://" in str(e.value)


def test_gdrive_small_folder_downloads(monkeypatch, tmp_path, shard_files):
    import gdown

    class E:
        def __init__(self, name):
            self.id, self.path = name, f"corpus/{name}"

    names = ["train_shard_0.hdf5", "test_shard_0.hdf5"]
    monkeypatch.setattr(gdown, "download_folder", lambda **kw: [E(n) for n in names] + [E("notes.txt")])
    monkeypatch.setattr(gdown, "download", lambda id, output, **kw: shutil.copy(shard_files / id, output))
    got = fetch("https://drive.google.com/drive/folders/abc", tmp_path / "out")
    assert sorted(p.name for p in got) == sorted(names)
    same_arrays(tmp_path / "out" / "train_shard_0.hdf5", shard_files / "train_shard_0.hdf5")


@pytest.mark.gcs
def test_gsutil_path_used_when_installed(gcs_bucket, shard_files, tmp_path, monkeypatch):
    """A stand-in gsutil on PATH (reads URIs on stdin like `gsutil -m cp -I DEST`); fetch must
    call it, verify md5 against the listing and move the files into place."""
    gcs_bucket("corpus")
    upload_dir(shard_files, "gs://corpus/p")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "gsutil.log"
    fake = bindir / "gsutil"
    fake.write_text(f"""#!{sys.executable}
import sys
from bigs.data import storage
open({str(log)!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
assert sys.argv[1:4] == ["-m", "cp", "-I"], sys.argv
dest = sys.argv[4]
for uri in sys.stdin.read().split():
    storage.download(uri, dest + "/" + uri.rsplit("/", 1)[-1])
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("BIGS_GSUTIL", "always")
    out = tmp_path / "out"
    fetch("gs://corpus/p", out)
    assert log.read_text().startswith("-m cp -I ")
    for p in shard_files.iterdir():
        assert (out / p.name).read_bytes() == p.read_bytes()


# ---------------------------------------------------------------- raw sources (a Wikipedia dump by URL)
def test_a_raw_file_is_checked_against_the_dumps_md5sums(http_dir, tmp_path, fast_retries):
    """fetch_raw: the dump's md5 from its md5sums file, which lists the dated names the latest/ links
    point to (as dumps.wikimedia.org's); a mismatch leaves nothing; a verified copy is kept."""
    import hashlib

    from bigs.data.fetch import fetch_raw

    url, root = http_dir
    dump = b"<mediawiki>" + bytes(range(256)) * 400 + b"</mediawiki>"
    (root / "enwiki-latest-pages-articles.xml.bz2").write_bytes(dump)
    md5 = hashlib.md5(dump).hexdigest()
    (root / "md5sums.txt").write_text(
        f"{'0' * 32}  enwiki-20241201-pages-articles-multistream.xml.bz2\n{md5}  enwiki-20241201-pages-articles.xml.bz2\n"
    )
    out = tmp_path / "raw" / "enwiki.xml.bz2"
    got = fetch_raw(url + "enwiki-latest-pages-articles.xml.bz2", out, md5_url=url + "md5sums.txt")
    assert got.read_bytes() == dump and [p.name for p in out.parent.iterdir()] == [out.name]
    mtime = out.stat().st_mtime_ns
    fetch_raw(url + "enwiki-latest-pages-articles.xml.bz2", out, md5=md5)  # present and verified: not fetched again
    assert out.stat().st_mtime_ns == mtime
    bad = tmp_path / "bad.xml.bz2"
    with pytest.raises(BigsError, match="md5: checksum mismatch"):
        fetch_raw(url + "enwiki-latest-pages-articles.xml.bz2", bad, md5="f" * 32)
    assert not bad.exists() and not list(bad.parent.glob(".tmp-*"))
    with pytest.raises(BigsError, match="no checksum for nope.xml.bz2"):
        fetch_raw(url + "nope.xml.bz2", tmp_path / "n", md5_url=url + "md5sums.txt")
    with pytest.raises(BigsError, match="--md5: a raw download needs its checksum"):
        fetch_raw(url + "enwiki-latest-pages-articles.xml.bz2", tmp_path / "m")
