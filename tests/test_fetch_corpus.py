"""bigs.data.fetch on a whole folder of hundreds of shards: a manifest, parallel
downloads, bounded retries, injected failures (dropped connections, a short body, wrong bytes),
nothing half-written, resume after kill -9, the Drive API manifest builder, and the workflow rule.

A local http.server on 127.0.0.1 holds N_FILES tiny real shards and fails on purpose.
"""

from __future__ import annotations

import collections
import functools
import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from conftest import make_shard

from bigs.data import storage
from bigs.data.fetch import fetch, make_manifest, read_manifest
from bigs.errors import BigsError

N_FILES = 210


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """N_FILES distinct small valid shards (the authors' folder, in miniature)."""
    d = tmp_path_factory.mktemp("www")
    for k in range(N_FILES - 10):
        make_shard(d / f"train_shard_{k}.hdf5", 3, seed=k)
    for k in range(10):
        make_shard(d / f"test_shard_{k}.hdf5", 3, seed=1000 + k)
    (d / "MD5SUMS").write_text("".join(f"{storage.md5_file(p)}  {p.name}\n" for p in sorted(d.glob("*.hdf5"))))
    return d


class FlakyServer:
    """Serves `root`; per file name: `drop` closes the connection on the first request, `short`
    sends half the body on the first request, `bad` always serves wrong bytes of the right size,
    `delay` seconds per file request. Counts GETs per name."""

    def __init__(self, root: Path):
        self.root, self.drop, self.short, self.bad, self.delay = root, set(), set(), set(), 0.0
        self.gets = collections.Counter()
        self.lock = threading.Lock()
        srv = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                name = urllib.parse.unquote(self.path.lstrip("/"))
                if not name.endswith(".hdf5"):
                    return super().do_GET()  # index page, MD5SUMS
                with srv.lock:
                    srv.gets[name] += 1
                    n = srv.gets[name]
                time.sleep(srv.delay)
                data = (srv.root / name).read_bytes()
                if name in srv.drop and n == 1:
                    self.close_connection = True  # no response at all: RemoteDisconnected
                    return
                if name in srv.bad:
                    data = bytes(b ^ 0xFF for b in data)
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if name in srv.short and n == 1:
                    self.wfile.write(data[: len(data) // 2])  # then the connection closes
                    self.close_connection = True
                    return
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(corpus_dir):
    s = FlakyServer(corpus_dir)
    yield s
    s.stop()


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv("BIGS_RETRIES", "3")
    monkeypatch.setenv("BIGS_RETRY_BACKOFF", "0.05")
    monkeypatch.setenv("BIGS_NET_TIMEOUT", "5")


def leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".tmp")]


def test_whole_folder_with_injected_failures_then_a_rerun_finishes(server, corpus_dir, tmp_path, fast_retries):
    manifest = tmp_path / "corpus.tsv"
    files = make_manifest(server.url, manifest)  # http index + MD5SUMS -> every name, URL and md5
    assert len(files) == N_FILES and all(f.md5 for f in files)
    assert [f.name for f in read_manifest(str(manifest))] == [f.name for f in files]
    names = sorted(f.name for f in files)
    server.drop = set(names[0:40:2])  # 20 dropped connections, 20 short bodies: retried
    server.short = set(names[1:40:2])
    server.bad = {"train_shard_7.hdf5"}  # wrong bytes: md5 fails, reported, nothing left
    out = tmp_path / "out"
    with pytest.raises(BigsError) as e:
        fetch(None, out, n_threads=8, manifest=str(manifest))
    assert "train_shard_7.hdf5: md5: checksum mismatch" in str(e.value)
    present = sorted(p.name for p in out.glob("*.hdf5"))
    assert present == [n for n in names if n != "train_shard_7.hdf5"]
    assert not leftovers(out)
    for n in present:  # every file in place is whole and right
        assert (out / n).read_bytes() == (corpus_dir / n).read_bytes()
    assert all(server.gets[n] == 2 for n in server.drop | server.short)  # one retry each
    assert server.gets["train_shard_7.hdf5"] == 1  # a checksum mismatch is not retried blindly
    # the source is fixed; a rerun fetches only the missing file
    server.bad.clear()
    before = sum(server.gets.values())
    got = fetch(None, out, n_threads=8, manifest=str(manifest))
    assert len(got) == N_FILES and sum(server.gets.values()) - before == 1
    assert (out / "train_shard_7.hdf5").read_bytes() == (corpus_dir / "train_shard_7.hdf5").read_bytes()


def test_many_failures_are_reported_together(server, tmp_path, fast_retries):
    manifest = tmp_path / "corpus.tsv"
    make_manifest(server.url, manifest)
    server.bad = {"train_shard_1.hdf5", "train_shard_2.hdf5", "test_shard_3.hdf5"}
    with pytest.raises(BigsError, match=rf"fetch: 3 of {N_FILES} file\(s\) failed.*rerun the same command"):
        fetch(None, tmp_path / "out", n_threads=4, manifest=str(manifest))
    assert len(list((tmp_path / "out").glob("*.hdf5"))) == N_FILES - 3


def test_kill9_mid_fetch_then_rerun_resumes(server, tmp_path):
    """The CLI as the workflow runs it (--stage): killed mid-way, rerun, only the rest is fetched."""
    manifest = tmp_path / "corpus.tsv"
    make_manifest(server.url, manifest)
    server.delay = 0.05  # ≈ 3 s for the whole folder at 4 jobs
    out, stage = tmp_path / "out", tmp_path / "stage"
    cmd = [
        sys.executable,
        "-m",
        "bigs.data.fetch",
        "--manifest",
        str(manifest),
        "--output",
        str(out),
        "--stage",
        str(stage),
        "--jobs",
        "4",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = stage / ".bigs-fetch.json"
    deadline = time.time() + 60
    while time.time() < deadline and not (state.exists() and json.loads(state.read_text())["files"]):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = set(json.loads(state.read_text())["files"])
    assert 0 < len(done) < N_FILES and not out.exists()  # the output appears only complete
    server.gets.clear()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{N_FILES - len(done)} to fetch" in r.stderr
    assert not done & set(server.gets)  # verified files were not downloaded again
    assert len(list(out.glob("*.hdf5"))) == N_FILES and not leftovers(stage)
    assert (out / "train_shard_0.hdf5").stat().st_ino == (stage / "train_shard_0.hdf5").stat().st_ino  # linked


def test_drive_api_manifest_pages_and_subfolders(tmp_path, monkeypatch):
    """--make-manifest of a Drive folder of thousands: files.list, 1000 a page, sub-folders."""
    pages = {
        ("root", ""): {
            "files": [
                {"id": f"f{i}", "name": f"train_shard_{i}.hdf5", "size": "10", "md5Checksum": "a" * 32}
                for i in range(1000)
            ],
            "nextPageToken": "p2",
        },
        ("root", "p2"): {
            "files": [
                {"id": "sub", "name": "test", "mimeType": "application/vnd.google-apps.folder"},
                {"id": "n", "name": "notes.txt", "size": "3"},
            ]
        },
        ("sub", ""): {"files": [{"id": "t0", "name": "test_shard_0.hdf5", "size": "7", "md5Checksum": "b" * 32}]},
    }
    seen = []

    class API(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            seen.append(q)
            folder = q["q"][0].split("'")[1]
            body = json.dumps(pages[(folder, q.get("pageToken", [""])[0])]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), API)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("BIGS_DRIVE_API", f"http://127.0.0.1:{httpd.server_address[1]}/drive/v3/files")
    try:
        with pytest.raises(BigsError, match="--drive_api_key"):
            make_manifest("https://drive.google.com/drive/folders/root", tmp_path / "m.tsv")
        files = make_manifest("https://drive.google.com/drive/folders/root", tmp_path / "m.tsv", api_key="KEY")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(files) == 1001 and all(s["key"] == ["KEY"] for s in seen)
    back = {f.name: f for f in read_manifest(str(tmp_path / "m.tsv"))}
    assert back["test_shard_0.hdf5"].uri == "gdrive:t0" and back["test_shard_0.hdf5"].md5 == "b" * 32
    assert back["train_shard_999.hdf5"].size == 10 and "notes.txt" not in back


def test_bad_manifest_line_names_the_line(tmp_path):
    m = tmp_path / "m.tsv"
    m.write_text("name\tsource\tsize\tmd5\ntrain_shard_0.hdf5\thttp://x/a\t12\tnot-an-md5\n")
    with pytest.raises(BigsError, match=r"m\.tsv: line 2: .*md5"):
        read_manifest(str(m))


def test_workflow_corpus_target_uses_the_manifest(tmp_path):
    from conftest import copy_workflow, shell_commands, smk, write_yaml

    wf = copy_workflow(tmp_path / "wf")
    (wf / "corpus.tsv").write_text("name\tsource\tsize\tmd5\n")
    write_yaml(
        wf / "m.yaml", {"corpus": {"name": "authors", "source": "prebuilt", "prebuilt": {"manifest": "corpus.tsv"}}}
    )
    out = smk(wf, "-n", "-p", "corpus", "--configfile", "m.yaml").stdout
    (cmd,) = shell_commands(out, "bigs.data.fetch")
    assert cmd[cmd.index("--manifest") + 1] == "corpus.tsv" and "--source" not in cmd
    assert cmd[cmd.index("--stage") + 1] == "resources/prebuilt/.stage/authors"
