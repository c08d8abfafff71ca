"""Fetch the published prebuilt hdf5 corpus (or any shard directory) into a local dir.

    python -m bigs.data.fetch --source SRC --output DIR [--jobs 8] [--retries 5] [--vocab_size 30522]
    python -m bigs.data.fetch --manifest FILE --output DIR [--jobs 16]    # a folder of thousands
    python -m bigs.data.fetch --make-manifest SRC --output FILE [--drive_api_key KEY]   # online
    python -m bigs.data.fetch --raw_url URL --md5_url SUMS_URL --output FILE   # one raw text file (a Wikipedia dump)

SRC: a Google Drive folder URL (gdown), gs://bucket/prefix (gsutil -m cp when installed, else
google-cloud-storage; STORAGE_EMULATOR_HOST honoured), an http(s) URL (a single .hdf5 file or a
directory index page; an MD5SUMS file there supplies checksums), or a local directory.

A manifest (TSV, `#` comments, header `name  source  size  md5`, one shard a line; size and md5
empty when unknown) lists every file with its own address — an http(s) URL, gs://…, a local path or
`gdrive:<file id>` — so a folder of thousands of files is fetched without listing it (Drive's
folder view, which gdown reads, stops at 50 files). `--make-manifest` writes one from any SRC; for a
Drive folder it pages through the Drive API `files.list` (needs an API key; the folder must be
shared "anyone with the link"): see docs/WORKFLOW.md "The authors' corpus, whole".

Only shard files (*.hdf5, *.h5) are fetched, `--jobs` at a time, each with bounded retries
(`--retries`, backoff doubling from BIGS_RETRY_BACKOFF s). Each goes to a temp name and is renamed
once its size/md5 check passes (manifest, GCS and MD5SUMS give md5; otherwise the md5 of the first
download is recorded in DIR/.bigs-fetch.json and later runs verify against it). Files already
present and verified are skipped and that record is saved as files finish, so an interrupted
fetch (kill -9 included) resumes. Every new shard's layout is validated
(bigs.data.format.validate_shard); a bad one is removed. One failed file does not stop the others:
all failures are reported together at the end (exit 2) and a rerun fetches only what is missing.
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
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

from bigs.data import storage
from bigs.data.format import DEFAULT_VOCAB_SIZE, SHARD_SUFFIXES, validate_shard
from bigs.errors import BigsError, atomic_dir, atomic_path, cli_main, fail

log = logging.getLogger("bigs.data.fetch")
MANIFEST = ".bigs-fetch.json"
GDRIVE_LIMIT = 50  # Drive's folder view (what gdown parses) lists at most 50 entries per folder


def is_gdrive(src: str) -> bool:
    return bool(re.match(r"https?://drive\.google\.com/", src))


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


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
        raise fail(
            url, "--source", f"cannot list the Google Drive folder ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    per_folder = Counter(os.path.dirname(e.path) for e in entries)
    full = [d or "/" for d, n in per_folder.items() if n >= GDRIVE_LIMIT]
    if full:
        raise fail(
            url,
            "--source",
            f"Google Drive lists only {GDRIVE_LIMIT} files per folder and folder(s) {full} "
            f"show {GDRIVE_LIMIT}: the listing is truncated. Copy the folder to gs:// (then --source gs://…) "
            "or download it with rclone / Drive for desktop (then --source LOCAL_DIR)",
        )
    return [storage.RemoteFile(f"gdrive:{e.id}", os.path.basename(e.path)) for e in entries]


def gdrive_download(file_id: str, dest: Path, md5: str | None = None, size: int | None = None) -> None:
    import gdown

    with atomic_path(dest) as tmp:

        def go():
            if gdown.download(id=file_id, output=str(tmp), quiet=True, use_cookies=False) is None:
                raise ConnectionError("gdown returned nothing")

        storage._with_retries(f"gdrive:{file_id}", "download", go)
        if size is not None and tmp.stat().st_size != size:
            raise fail(
                dest,
                "size",
                f"downloaded {tmp.stat().st_size} bytes from gdrive:{file_id}, expected {size} — "
                "bad file removed; re-run",
            )
        if md5 is not None and (got := storage.md5_file(tmp)) != md5:
            raise fail(
                dest,
                "md5",
                f"checksum mismatch for gdrive:{file_id}: got {got}, expected {md5} — bad file removed; re-run",
            )


# ---------------------------------------------------------------- manifest: a folder of thousands
MANIFEST_COLUMNS = ("name", "source", "size", "md5")


def read_manifest(path: str) -> list[storage.RemoteFile]:
    """The file list of a manifest (local path or http(s) URL); see the module docstring."""
    files = []
    for n, line in enumerate(storage.read_text(path).splitlines(), 1):
        if not line.strip() or line.startswith("#") or line.split("\t")[0] == "name":
            continue
        cols = line.split("\t")
        if len(cols) != 4:
            raise fail(path, f"line {n}", f"expected 4 tab-separated columns {MANIFEST_COLUMNS}, got {len(cols)}")
        name, src, size, md5 = (c.strip() for c in cols)
        if not name or "/" in name or name.startswith("."):
            raise fail(path, f"line {n}", f"name {name!r} must be a plain file name")
        if not re.fullmatch(r"\d*", size) or not re.fullmatch(r"([0-9a-fA-F]{32})?", md5):
            raise fail(
                path, f"line {n}", f"size {size!r} must be a byte count and md5 {md5!r} 32 hex digits (or empty)"
            )
        files.append(storage.RemoteFile(src, name, int(size) if size else None, md5.lower() or None))
    return files


def write_manifest(files: list[storage.RemoteFile], dest, source: str) -> None:
    with atomic_path(dest) as tmp:
        lines = [f"# bigs.data.fetch manifest of {source}: {len(files)} files", "\t".join(MANIFEST_COLUMNS)]
        lines += ["\t".join((f.name, f.uri, "" if f.size is None else str(f.size), f.md5 or "")) for f in files]
        tmp.write_text("\n".join(lines) + "\n")


DRIVE_API = "https://www.googleapis.com/drive/v3/files"  # BIGS_DRIVE_API overrides (tests)


def drive_api_listing(folder_url: str, key: str) -> list[storage.RemoteFile]:
    """Every file under a Drive folder (sub-folders too), 1000 per page, with size and md5."""
    m = re.search(r"/folders/([\w-]+)", folder_url)
    if not m:
        raise fail(folder_url, "--make-manifest", "expected https://drive.google.com/drive/folders/<id>")
    api = os.environ.get("BIGS_DRIVE_API", DRIVE_API)
    files, folders = [], [m.group(1)]
    while folders:
        folder, token = folders.pop(), ""
        while True:
            q = {
                "q": f"'{folder}' in parents and trashed = false",
                "pageSize": "1000",
                "key": key,
                "fields": "nextPageToken,files(id,name,size,md5Checksum,mimeType)",
                "supportsAllDrives": "true",
                "includeItemsFromAllDrives": "true",
            }
            if token:
                q["pageToken"] = token
            page = json.loads(storage._http_get(f"{api}?{urllib.parse.urlencode(q)}"))
            for f in page.get("files", []):
                if f.get("mimeType") == "application/vnd.google-apps.folder":
                    folders.append(f["id"])
                else:
                    files.append(
                        storage.RemoteFile(
                            f"gdrive:{f['id']}",
                            f["name"],
                            int(f["size"]) if f.get("size") else None,
                            f.get("md5Checksum"),
                        )
                    )
            token = page.get("nextPageToken")
            if not token:
                break
    return sorted(files, key=lambda f: f.name)


def make_manifest(src: str, dest, api_key: str | None = None) -> list[storage.RemoteFile]:
    """Write the manifest of every shard under `src` (run where `src` is reachable)."""
    if is_gdrive(src):
        key = api_key or os.environ.get("GOOGLE_API_KEY")
        if not key:
            raise fail(
                src,
                "--drive_api_key",
                "listing a Drive folder of more than 50 files needs the Drive API: pass "
                "--drive_api_key KEY or set GOOGLE_API_KEY (Google Cloud console → APIs → Drive API → credentials)",
            )
        files = drive_api_listing(src, key)
    else:
        files = listing(src)
        for f in files:  # local sources: sizes and md5 are cheap to know
            if not storage.is_remote(f.uri):
                f.size, f.md5 = Path(f.uri).stat().st_size, f.md5 or storage.md5_file(f.uri)
    files = [f for f in files if f.name.endswith(SHARD_SUFFIXES) and not f.name.startswith(".")]
    if not files:
        raise fail(src, "--make-manifest", "no shard files (*.hdf5) found there")
    write_manifest(files, dest, src)
    return files


def listing(src: str) -> list[storage.RemoteFile]:
    if is_gdrive(src):
        files = gdrive_listing(src)
    elif src.startswith(("http://", "https://")) and src.endswith(SHARD_SUFFIXES):
        files = [storage.RemoteFile(src, src.rsplit("/", 1)[-1])]
    else:
        files = storage.list_files(src)
    return [f for f in files if f.name.endswith(SHARD_SUFFIXES) and not f.name.startswith(".")]


def fetch(
    src: str | None,
    out,
    n_threads: int = 8,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    manifest: str | None = None,
    stage=None,
) -> list[Path]:
    """Fetch and validate every shard of `src` (or of the `manifest` file list) into `out`;
    return the local paths.

    stage: download into this persistent dir instead, then hard-link the complete set into `out`
    (appearing at once). Snakemake deletes a failed job's output dir; the stage survives, so a
    rerun fetches only what is missing.
    """
    if stage is not None:
        staged = fetch(src, stage, n_threads, vocab_size, manifest)
        with atomic_dir(out) as tmp:
            for f in staged:
                try:
                    os.link(f, tmp / f.name)
                except OSError:  # another file system: copy
                    shutil.copy2(f, tmp / f.name)
        return [Path(out) / f.name for f in staged]
    out = Path(out)
    files = read_manifest(manifest) if manifest else listing(src)
    src = src or manifest
    if not files:
        raise fail(src, "--manifest" if manifest else "--source", "no shard files (*.hdf5) found there")
    names = Counter(f.name for f in files)
    if max(names.values()) > 1:
        raise fail(src, "--source", f"duplicate file names {[n for n, c in names.items() if c > 1][:5]}")
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out, src, vocab_size)
    todo = [f for f in files if not is_verified(out / f.name, f, ledger.files.get(f.name))]
    for f in todo:  # temp files of a killed fetch (atomic_path's names)
        for tmp in out.glob(f".tmp-{glob_escape(f.name)}.*"):
            tmp.unlink(missing_ok=True)
    log.info("%s: %d shard(s), %d to fetch", src, len(files), len(todo))
    try:
        if src.startswith("gs://") and storage.use_gsutil() and todo:
            fetch_with_gsutil(todo, ledger)
        else:
            fetch_in_threads(todo, ledger, n_threads, n_files=len(files))
    finally:
        ledger.save()
    return [out / f.name for f in files]


class Ledger:
    """What `out` holds, verified (its manifest state), saved as files finish (every 2 s at most) so
    a killed fetch resumes where it was; `finish` checks each downloaded file, keeps or removes it."""

    def __init__(self, out: Path, src: str, vocab_size: int):
        self.out, self.src, self.vocab_size = out, src, vocab_size
        self.files = load_manifest(out)
        self.lock, self.saved = threading.Lock(), time.monotonic()

    def save(self) -> None:
        save_manifest(self.out, self.src, self.files)

    def finish(self, f: storage.RemoteFile, md5: str | None = None) -> None:
        """Check md5 (recording it if the source gives none) and layout; keep or remove."""
        path = self.out / f.name
        md5 = md5 or storage.md5_file(path)
        if f.md5 is not None and md5 != f.md5:
            path.unlink()
            raise fail(
                path, "md5", f"checksum mismatch for {f.uri}: got {md5}, expected {f.md5} — bad file removed; re-run"
            )
        try:
            validate_shard(path, vocab_size=self.vocab_size)
        except BigsError:
            path.unlink()
            raise
        st = path.stat()
        with self.lock:
            self.files[f.name] = {
                "size": st.st_size,
                "md5": md5,
                "mtime_ns": st.st_mtime_ns,
                "validated": True,
                "uri": f.uri,
            }
            if time.monotonic() - self.saved > 2:
                self.save()
                self.saved = time.monotonic()

    def download(self, f: storage.RemoteFile) -> None:
        """One file from its source (Drive or storage), then finish()."""
        path = self.out / f.name
        if f.uri.startswith("gdrive:"):
            gdrive_download(f.uri[len("gdrive:") :], path, md5=f.md5, size=f.size)
        else:
            entry = self.files.get(f.name) or {}
            storage.download(f.uri, path, md5=f.md5 or None, size=f.size)
            if f.md5 is None and entry.get("md5") and storage.md5_file(path) != entry["md5"]:
                log.warning("%s: md5 differs from the first download (%s); the source changed?", f.name, entry["md5"])
        self.finish(f, f.md5)  # a known md5 was checked before the rename


def fetch_with_gsutil(todo: list, ledger: Ledger) -> None:
    """One parallel `gsutil -m cp` into a stage dir, then each file moved into place and checked."""
    stage = Path(tempfile.mkdtemp(prefix=".tmp-gsutil-", dir=ledger.out))
    try:
        storage.gsutil_cp([f.uri for f in todo], stage)
        for f in todo:
            if not (stage / f.name).is_file():
                raise fail(ledger.out / f.name, "gsutil", f"{f.uri} was not downloaded")
            os.replace(stage / f.name, ledger.out / f.name)
            ledger.finish(f)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def fetch_in_threads(todo: list, ledger: Ledger, n_threads: int, *, n_files: int) -> None:
    """Download `todo` in n_threads threads; the others go on when one fails, and every failure is
    reported at the end (one error naming the first)."""
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max(1, n_threads)) as pool:
        for fut in concurrent.futures.as_completed([pool.submit(ledger.download, f) for f in todo]):
            try:
                fut.result()
            except BigsError as exc:
                log.error("%s", exc)
                failed.append(exc)
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise BigsError(
            f"{ledger.out}: fetch: {len(failed)} of {len(todo)} file(s) failed, first: {failed[0]} — the "
            f"{n_files - len(failed)} others are verified; rerun the same command to fetch the rest"
        )


def checksum_for(name: str, sums: str, where: str) -> str:
    """`name`'s md5 in a checksum list. A `-latest-` name (dumps.wikimedia.org/enwiki/latest/) is
    found under the dump's date too: the latest md5sums list the dated files the links point to."""
    table = {}
    for line in sums.splitlines():
        parts = line.split()
        if len(parts) == 2:
            table[parts[1].lstrip("*")] = parts[0].lower()
    if name in table:
        return table[name]
    if "-latest-" in name:
        head, tail = name.split("-latest-", 1)
        dated = re.compile(re.escape(head) + r"-\d{8}-" + re.escape(tail))
        found = [k for k in table if dated.fullmatch(k)]
        if len(found) == 1:
            return table[found[0]]
    raise fail(where, "--md5_url", f"no checksum for {name} in it ({len(table)} entries)")


def fetch_raw(url: str, dest, *, md5: str | None = None, md5_url: str | None = None) -> Path:
    """One raw text file (a Wikipedia XML dump) to `dest`, verified against its md5: given, or looked up
    for the file's name in a checksum list (`<hex>  <name>` lines, e.g. enwiki-latest-md5sums.txt).
    Nothing is left at `dest` on a mismatch; a file already there with that md5 is kept."""
    dest, name = Path(dest), url.rsplit("/", 1)[-1]
    if md5_url:
        md5 = checksum_for(name, storage.read_text(md5_url), md5_url)
    if not md5:
        raise fail(url, "--md5", "a raw download needs its checksum: --md5 HEX or --md5_url (the dump's md5sums file)")
    if dest.is_file() and storage.md5_file(dest) == md5:
        log.info("%s: present, md5 %s", dest, md5)
        return dest
    storage.download(url, dest, md5=md5)
    log.info("%s: downloaded from %s, md5 %s", dest, url, md5)
    return dest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--source", help="Google Drive folder URL, gs://bucket/prefix, http(s) URL or local dir")
    what.add_argument("--manifest", help="TSV file list (name, source, size, md5): local path or http(s) URL")
    what.add_argument("--raw_url", help="one raw text file (a Wikipedia dump) to --output, checked by --md5/--md5_url")
    what.add_argument(
        "--make-manifest",
        dest="make_manifest",
        metavar="SRC",
        help="write the manifest of SRC to --output instead of fetching",
    )
    p.add_argument("--output", required=True, help="local directory (the manifest file with --make-manifest)")
    p.add_argument(
        "--stage",
        default=None,
        help="download into this persistent dir, then hard-link the complete set "
        "into --output (the workflow: a failed job's output is deleted, the stage is kept for the rerun)",
    )
    p.add_argument("--jobs", "--n_threads", dest="n_threads", type=int, default=8, help="parallel downloads")
    p.add_argument(
        "--retries",
        type=int,
        default=None,
        help="attempts per file before it counts as failed "
        "(default BIGS_RETRIES or 5; waits BIGS_RETRY_BACKOFF s, doubling)",
    )
    p.add_argument(
        "--drive_api_key",
        default=None,
        help="Drive API key for --make-manifest of a Drive folder (default GOOGLE_API_KEY)",
    )
    p.add_argument("--vocab_size", type=int, default=DEFAULT_VOCAB_SIZE, help="for validation: ids must be below it")
    p.add_argument("--md5", default=None, help="with --raw_url: the file's md5")
    p.add_argument("--md5_url", default=None, help="with --raw_url: a checksum list that names the file")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.retries is not None:
        os.environ["BIGS_RETRIES"] = str(a.retries)  # read by bigs.data.storage
    if a.raw_url:
        print(f"{fetch_raw(a.raw_url, a.output, md5=a.md5, md5_url=a.md5_url)}: verified")
        return
    if a.make_manifest:
        files = make_manifest(a.make_manifest, a.output, a.drive_api_key)
        print(
            f"{a.output}: manifest of {len(files)} shard(s) "
            f"({sum(f.md5 is not None for f in files)} with md5); fetch with --manifest {a.output}"
        )
        return
    paths = fetch(a.source, a.output, a.n_threads, a.vocab_size, manifest=a.manifest, stage=a.stage)
    print(f"{a.output}: {len(paths)} shard(s) present and verified")


if __name__ == "__main__":
    cli_main(main, output_flag="--output")
