"""Fetch the published prebuilt hdf5 corpus (or any shard directory) into a local dir.

    python -m bigs.data.fetch --source SRC --output DIR [--n_threads 8] [--vocab_size 30522]

SRC: a Google Drive folder URL (gdown), gs://bucket/prefix (gsutil -m cp when installed, else
google-cloud-storage; STORAGE_EMULATOR_HOST honoured), an http(s) URL (a single .hdf5 file or a
directory index page; an MD5SUMS file there supplies checksums), or a local directory.

Only shard files (*.hdf5, *.h5) are fetched. Each goes to a temp name and is renamed once its
size/md5 check passes (GCS and MD5SUMS give md5; otherwise the md5 of the first download is
recorded in DIR/.bigs-fetch.json and later runs verify against it). Files already present and
verified are skipped, so an interrupted fetch resumes. Every new shard's layout is validated
(bigs.data.format.validate_shard); a bad one is removed and reported.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from bigs.data import storage
from bigs.data.format import DEFAULT_VOCAB_SIZE, SHARD_SUFFIXES, validate_shard
from bigs.errors import BigsError, atomic_path, cli_main, fail

log = logging.getLogger("bigs.data.fetch")
MANIFEST = ".bigs-fetch.json"
GDRIVE_LIMIT = 50  # Drive's folder view (what gdown parses) lists at most 50 entries per folder


def is_gdrive(src: str) -> bool:
    return bool(re.match(r"https?://drive\.google\.com/", src))


def load_manifest(out: Path) -> dict:
    try:
        return json.loads((out / MANIFEST).read_text())["files"]
    except (FileNotFoundError, KeyError, ValueError):
        return {}


def save_manifest(out: Path, src: str, files: dict) -> None:
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps({"source": src, "files": files}, indent=1, sort_keys=True))


def local_md5(path: Path, entry: dict | None) -> str:
    """md5 of a local file, reusing the manifest's when size and mtime are unchanged."""
    st = path.stat()
    if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns and entry.get("md5"):
        return entry["md5"]
    return storage.md5_file(path)


def is_verified(path: Path, remote: storage.RemoteFile, entry: dict | None) -> bool:
    """Present and matching the remote md5 (or, lacking one, the md5 recorded at first download)."""
    if not path.is_file():
        return False
    if remote.size is not None and path.stat().st_size != remote.size:
        return False
    want = remote.md5 or (entry or {}).get("md5")
    return want is not None and local_md5(path, entry) == want and bool((entry or {}).get("validated"))


def gdrive_listing(url: str) -> list[storage.RemoteFile]:
    """Shard files of a Drive folder. Drive lists at most 50 entries per folder, so a folder that
    shows 50 is treated as truncated: fail and say what to do instead of fetching part of it."""
    import gdown

    try:
        entries = gdown.download_folder(url=url, skip_download=True, quiet=True, use_cookies=False)
    except Exception as exc:
        raise fail(url, "--source", f"cannot list the Google Drive folder ({type(exc).__name__}: {str(exc)[:200]})") from None
    per_folder = Counter(os.path.dirname(e.path) for e in entries)
    full = [d or "/" for d, n in per_folder.items() if n >= GDRIVE_LIMIT]
    if full:
        raise fail(url, "--source", f"Google Drive lists only {GDRIVE_LIMIT} files per folder and folder(s) {full} "
                   f"show {GDRIVE_LIMIT}: the listing is truncated. Copy the folder to gs:// (then --source gs://…) "
                   "or download it with rclone / Drive for desktop (then --source LOCAL_DIR)")
    return [storage.RemoteFile(f"gdrive:{e.id}", os.path.basename(e.path)) for e in entries]


def gdrive_download(file_id: str, dest: Path) -> None:
    import gdown

    with atomic_path(dest) as tmp:
        def go():
            if gdown.download(id=file_id, output=str(tmp), quiet=True, use_cookies=False) is None:
                raise ConnectionError("gdown returned nothing")
        storage._with_retries(f"gdrive:{file_id}", "download", go)


def listing(src: str) -> list[storage.RemoteFile]:
    if is_gdrive(src):
        files = gdrive_listing(src)
    elif src.startswith(("http://", "https://")) and src.endswith(SHARD_SUFFIXES):
        files = [storage.RemoteFile(src, src.rsplit("/", 1)[-1])]
    else:
        files = storage.list_files(src)
    return [f for f in files if f.name.endswith(SHARD_SUFFIXES) and not f.name.startswith(".")]


def fetch(src: str, out, n_threads: int = 8, vocab_size: int = DEFAULT_VOCAB_SIZE) -> list[Path]:
    """Fetch and validate every shard of `src` into `out`; return the local paths."""
    out = Path(out)
    files = listing(src)
    if not files:
        raise fail(src, "--source", "no shard files (*.hdf5) found there")
    names = Counter(f.name for f in files)
    if max(names.values()) > 1:
        raise fail(src, "--source", f"duplicate file names {[n for n, c in names.items() if c > 1][:5]}")
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(out)
    todo = [f for f in files if not is_verified(out / f.name, f, manifest.get(f.name))]
    log.info("%s: %d shard(s), %d to fetch", src, len(files), len(todo))

    def finish(f: storage.RemoteFile) -> None:
        """Check md5 (recording it if the source gives none) and layout; keep or remove."""
        path = out / f.name
        md5 = storage.md5_file(path)
        if f.md5 is not None and md5 != f.md5:
            path.unlink()
            raise fail(path, "md5", f"checksum mismatch for {f.uri}: got {md5}, expected {f.md5} — bad file removed; re-run")
        try:
            validate_shard(path, vocab_size=vocab_size)
        except BigsError:
            path.unlink()
            raise
        st = path.stat()
        manifest[f.name] = {"size": st.st_size, "md5": md5, "mtime_ns": st.st_mtime_ns, "validated": True, "uri": f.uri}

    def one(f: storage.RemoteFile) -> None:
        if f.uri.startswith("gdrive:"):
            gdrive_download(f.uri[len("gdrive:"):], out / f.name)
        else:
            entry = manifest.get(f.name) or {}
            storage.download(f.uri, out / f.name, md5=f.md5 or None, size=f.size)
            if f.md5 is None and entry.get("md5") and storage.md5_file(out / f.name) != entry["md5"]:
                log.warning("%s: md5 differs from the first download (%s); the source changed?", f.name, entry["md5"])
        finish(f)

    try:
        if src.startswith("gs://") and storage.use_gsutil() and todo:
            stage = Path(tempfile.mkdtemp(prefix=".tmp-gsutil-", dir=out))
            try:
                storage.gsutil_cp([f.uri for f in todo], stage)
                for f in todo:
                    if not (stage / f.name).is_file():
                        raise fail(out / f.name, "gsutil", f"{f.uri} was not downloaded")
                    os.replace(stage / f.name, out / f.name)
                    finish(f)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        else:
            with concurrent.futures.ThreadPoolExecutor(max(1, n_threads)) as pool:
                for fut in concurrent.futures.as_completed([pool.submit(one, f) for f in todo]):
                    fut.result()  # first error propagates; finished files stay verified
    finally:
        save_manifest(out, src, manifest)
    return [out / f.name for f in files]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help="Google Drive folder URL, gs://bucket/prefix, http(s) URL or local dir")
    p.add_argument("--output", required=True, help="local directory")
    p.add_argument("--n_threads", type=int, default=8, help="parallel downloads (python client)")
    p.add_argument("--vocab_size", type=int, default=DEFAULT_VOCAB_SIZE, help="for validation: ids must be below it")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    paths = fetch(a.source, a.output, a.n_threads, a.vocab_size)
    print(f"{a.output}: {len(paths)} shard(s) present and verified")


if __name__ == "__main__":
    cli_main(main, output_flag="--output")
