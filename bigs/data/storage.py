"""Where shards live: a local dir, gs://bucket/prefix, or an http(s) URL. List, download, upload.

One reader, two back-ends (STYLE.md: no copied local/GCS dataset packages). Every download goes
to a temp name next to the destination, is checked (size, md5 when known) and renamed; transient
failures are retried a bounded number of times (BIGS_RETRIES, default 5, backoff
BIGS_RETRY_BACKOFF seconds, doubling), then a BigsError names the URI.

GCS uses google-cloud-storage. With STORAGE_EMULATOR_HOST set (gcp-storage-emulator, tests) it
talks to the emulator with anonymous credentials (REFERENCE.md §4). Bulk copies use `gsutil -m cp`
when gsutil is installed and no emulator is set (BIGS_GSUTIL=always|never overrides).

The trainer streams gs:// shards with `local_copy(uri, cache_dir)` (download, use, delete).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html.parser
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bigs.errors import BigsError, atomic_path, fail


@dataclass
class RemoteFile:
    uri: str  # full address: local path, gs://bucket/name or https://host/name
    name: str  # base name
    size: int | None = None
    md5: str | None = None  # hex digest when the store knows it


def retries() -> int:
    return max(1, int(os.environ.get("BIGS_RETRIES", "5")))


def backoff() -> float:
    return float(os.environ.get("BIGS_RETRY_BACKOFF", "2"))


def timeout() -> float:
    return float(os.environ.get("BIGS_NET_TIMEOUT", "60"))


def is_remote(uri) -> bool:
    return str(uri).startswith(("gs://", "http://", "https://"))


def split_gcs(uri: str) -> tuple[str, str]:
    """gs://bucket/a/b -> ("bucket", "a/b")."""
    rest = uri[len("gs://") :]
    bucket, _, name = rest.partition("/")
    if not bucket:
        raise fail(uri, "uri", "expected gs://bucket/prefix")
    return bucket, name


def md5_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- GCS
def gcs_client():
    """A storage.Client: anonymous against STORAGE_EMULATOR_HOST, else default credentials
    (falling back to anonymous for public buckets)."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT", "test"), credentials=AnonymousCredentials()
        )
    try:
        return storage.Client()
    except Exception:  # no default credentials: public buckets still work
        return storage.Client.create_anonymous_client()


def _gcs_md5_hex(b64: str | None) -> str | None:
    return base64.b64decode(b64).hex() if b64 else None


def _permanent(exc: BaseException) -> bool:
    """Errors retrying cannot fix: not found, forbidden, bad request."""
    code = getattr(exc, "code", None)
    return code in (400, 401, 403, 404) or isinstance(exc, (FileNotFoundError, PermissionError))


def _with_retries(uri: str, what: str, fn):
    """Run fn() up to retries() times with exponential backoff on transient errors."""
    n, wait = retries(), backoff()
    for attempt in range(1, n + 1):
        try:
            return fn()
        except BigsError:
            raise
        except Exception as exc:  # network errors come in many types (requests, urllib, api_core)
            if _permanent(exc) or attempt == n:
                raise fail(
                    uri,
                    what,
                    f"failed after {attempt} attempt(s): {type(exc).__name__}: "
                    f"{str(exc)[:300]} — check the address, credentials and network, then re-run",
                ) from None
            time.sleep(wait)
            wait *= 2


def _list_gcs(uri: str) -> list[RemoteFile]:
    bucket, prefix = split_gcs(uri.rstrip("/"))
    prefix = prefix + "/" if prefix else ""

    def go():
        blobs = gcs_client().list_blobs(bucket, prefix=prefix, delimiter="/", retry=None, timeout=timeout())
        return [
            RemoteFile(f"gs://{bucket}/{b.name}", b.name.rsplit("/", 1)[-1], b.size, _gcs_md5_hex(b.md5_hash))
            for b in blobs
            if not b.name.endswith("/")
        ]

    return _with_retries(uri, "list", go)


def _gcs_stat(uri: str) -> RemoteFile:
    bucket, name = split_gcs(uri)

    def go():
        blob = gcs_client().bucket(bucket).get_blob(name, retry=None, timeout=timeout())
        if blob is None:
            raise fail(uri, "object", "not found")
        return RemoteFile(uri, name.rsplit("/", 1)[-1], blob.size, _gcs_md5_hex(blob.md5_hash))

    return _with_retries(uri, "stat", go)


def use_gsutil() -> bool:
    mode = os.environ.get("BIGS_GSUTIL", "auto")
    if mode in ("never", "0"):
        return False
    if mode in ("always", "1"):
        return True
    return shutil.which("gsutil") is not None and not os.environ.get("STORAGE_EMULATOR_HOST")


def gsutil_cp(uris: list[str], dest_dir) -> None:
    """`gsutil -m cp -I DEST` with the URIs on stdin (thousands of shards overflow argv).
    gsutil writes its own temp files and checks hashes; callers still verify md5 after."""
    cmd = ["gsutil", "-m", "cp", "-I", str(dest_dir)]
    proc = subprocess.run(cmd, input="\n".join(uris) + "\n", text=True, capture_output=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise BigsError(
            f"{dest_dir}: gsutil: `{' '.join(cmd)}` failed ({'; '.join(tail)}) — "
            "check `gsutil ls` works, or set BIGS_GSUTIL=never to use google-cloud-storage"
        )


# ---------------------------------------------------------------- http(s)
class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links += [v for k, v in attrs if k == "href" and v]


def _http_get(url: str) -> bytes:
    def go():
        with urllib.request.urlopen(url, timeout=timeout()) as r:
            return r.read()

    return _with_retries(url, "http", go)


def _list_http(url: str) -> list[RemoteFile]:
    """Files linked from a directory index page (python -m http.server, nginx autoindex…).
    An MD5SUMS / md5sums.txt file in the listing (`<hex>  <name>` lines) supplies checksums."""
    base = url if url.endswith("/") else url + "/"
    parser = _Links()
    parser.feed(_http_get(base).decode("utf-8", "replace"))
    files = {}
    for href in parser.links:
        full = urllib.parse.urljoin(base, href)
        name = urllib.parse.unquote(full.rsplit("/", 1)[-1])
        if full.startswith(base) and name and "?" not in href:
            files[name] = RemoteFile(full, name)
    for sums in ("MD5SUMS", "md5sums.txt"):
        if sums in files:
            for line in _http_get(files[sums].uri).decode().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("*") in files:
                    files[parts[1].lstrip("*")].md5 = parts[0].lower()
    return sorted(files.values(), key=lambda f: f.name)


# ---------------------------------------------------------------- generic API
def list_files(uri) -> list[RemoteFile]:
    """Direct children (files) of a local dir, gs://bucket/prefix or an http(s) index page."""
    uri = str(uri)
    if uri.startswith("gs://"):
        return _list_gcs(uri)
    if uri.startswith(("http://", "https://")):
        return _list_http(uri)
    d = Path(uri)
    if not d.is_dir():
        raise fail(d, "path", "no such directory")
    return [RemoteFile(str(p), p.name, p.stat().st_size) for p in sorted(d.iterdir()) if p.is_file()]


def read_text(uri) -> str:
    """A small text file's contents (a manifest, a checksum list): local path, gs:// or http(s)."""
    uri = str(uri)
    if uri.startswith("gs://"):
        with tempfile.TemporaryDirectory() as d:
            return download(uri, Path(d) / "file").read_text()
    if is_remote(uri):
        return _http_get(uri).decode()
    return Path(uri).read_text()


def download(uri: str, dest, *, md5: str | None = None, size: int | None = None) -> Path:
    """Copy one file to `dest` via a temp name; verify size and md5 when known (for gs:// the
    object's own md5 is used); on a mismatch nothing is left at `dest` and BigsError is raised."""
    uri, dest = str(uri), Path(dest)
    if uri.startswith("gs://") and md5 is None:
        stat = _gcs_stat(uri)
        md5, size = stat.md5, stat.size if size is None else size
    with atomic_path(dest) as tmp:
        if uri.startswith("gs://"):
            bucket, name = split_gcs(uri)

            def go():
                with open(tmp, "wb") as fh:  # reopened per attempt: no half-written carry-over
                    gcs_client().bucket(bucket).blob(name).download_to_file(
                        fh, retry=None, timeout=timeout(), checksum=None
                    )

            _with_retries(uri, "download", go)
        elif uri.startswith(("http://", "https://")):

            def go():
                with urllib.request.urlopen(uri, timeout=timeout()) as r, open(tmp, "wb") as fh:
                    shutil.copyfileobj(r, fh, 1 << 20)
                    want = r.headers.get("Content-Length")
                if want is not None and os.path.getsize(tmp) != int(want):
                    raise ConnectionError(f"short read: {os.path.getsize(tmp)} of {want} bytes")

            _with_retries(uri, "download", go)
        else:
            if not Path(uri).is_file():
                raise fail(uri, "path", "no such file")
            shutil.copyfile(uri, tmp)
        got_size = os.path.getsize(tmp)
        if size is not None and got_size != size:
            raise fail(
                dest, "size", f"downloaded {got_size} bytes from {uri}, expected {size} — bad file removed; re-run"
            )
        if md5 is not None:
            got = md5_file(tmp)
            if got != md5:
                raise fail(
                    dest, "md5", f"checksum mismatch for {uri}: got {got}, expected {md5} — bad file removed; re-run"
                )
    return dest


def upload(local, uri: str) -> None:
    """Upload one local file to gs://bucket/name, or copy it to a local path."""
    if uri.startswith("gs://"):
        bucket, name = split_gcs(uri)
        _with_retries(
            uri,
            "upload",
            lambda: (
                gcs_client().bucket(bucket).blob(name).upload_from_filename(str(local), retry=None, timeout=timeout())
            ),
        )
    else:
        with atomic_path(uri) as tmp:
            shutil.copyfile(local, tmp)


def fetch_to_cache(uri, cache_dir) -> Path:
    """Local path of shard `uri`: itself when local, else a fresh verified download into
    `cache_dir` (the caller deletes it after use: `evict`, or use `local_copy`)."""
    uri = str(uri)
    if not is_remote(uri):
        return Path(uri)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return download(uri, Path(cache_dir) / name)


def evict(path, uri) -> None:
    """Delete the cached copy made by fetch_to_cache (never a local source file)."""
    if is_remote(str(uri)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def local_copy(uri, cache_dir):
    """`with local_copy("gs://b/p/train_shard_3.hdf5", "/tmp/cache") as path:` — download, use, delete
    (the original TPU recipe streams shards this way on small VM disks, REFERENCE.md §1)."""
    path = fetch_to_cache(uri, cache_dir)
    try:
        yield path
    finally:
        evict(path, uri)
