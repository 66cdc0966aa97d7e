"""Checksummed downloads of data files, with an offline story.

Every file a built-in data set needs is described by a RemoteFile: its name, one or more
URLs (mirrors, tried in turn) and a published checksum. A file already on disk is used
only when its checksum matches; a download goes to a temporary file in the destination
folder and is moved into place atomically once verified, so an interrupted download never
leaves a half-written file under the real name.

Without a network (or with GENLAB_OFFLINE=1) the error names every missing file, where to
get it and the exact folder to put it in, so the data can be copied over by hand.
"""

from __future__ import annotations

import http.client

import hashlib
import os
import sys
import tempfile
import urllib.request
from urllib.error import HTTPError, URLError
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from tqdm import tqdm

from ..errors import GenlabError

__all__ = ["RemoteFile", "data_root", "fetch", "ensure_files", "offline_requested"]

TIMEOUT_S = 30.0  # per connection attempt and per read; a stalled mirror must not hang a run
CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    urls: tuple[str, ...]
    sha256: str | None = None
    md5: str | None = None

    def __post_init__(self):
        if not (self.sha256 or self.md5):
            raise ValueError(f"RemoteFile {self.filename!r} needs a sha256 or md5 checksum")
        if not self.urls:
            raise ValueError(f"RemoteFile {self.filename!r} needs at least one URL")


class _Unreachable(Exception):
    """No URL of a file could be reached; turned into a GenlabError listing all missing files."""


def data_root() -> Path:
    """Where data sets live: $GENLAB_DATA_DIR if set, else the user cache folder."""
    env = os.environ.get("GENLAB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("genlab")) / "data"


def offline_requested() -> bool:
    return os.environ.get("GENLAB_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def _checksum_mismatch(path: Path, remote: RemoteFile) -> str | None:
    """None if every published checksum of `remote` matches `path`, else a description."""
    hashers = {}
    if remote.sha256:
        hashers["sha256"] = (hashlib.sha256(), remote.sha256.lower())
    if remote.md5:
        hashers["md5"] = (hashlib.md5(), remote.md5.lower())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h, _ in hashers.values():
                h.update(chunk)
    for kind, (h, expected) in hashers.items():
        if h.hexdigest() != expected:
            return f"{kind} checksum mismatch: expected {expected}, got {h.hexdigest()}"
    return None


def _download(remote: RemoteFile, dest_dir: Path, progress: bool) -> Path:
    """Try each URL in turn; raise _Unreachable if none could be reached."""
    target = dest_dir / remote.filename
    failures = []  # (url, reason) for the error message
    for url in remote.urls:
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{remote.filename}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                total = response.headers.get("Content-Length")
                with tqdm(
                    total=int(total) if total else None,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=remote.filename,
                    file=sys.stderr,
                    disable=not progress,
                ) as bar:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
            mismatch = _checksum_mismatch(tmp, remote)
            if mismatch is not None:
                # A bad mirror (or a corrupted transfer) should not stop us trying the next one.
                failures.append((url, "checksum", mismatch))
                continue
            os.replace(tmp, target)
            return target
        except (OSError, http.client.HTTPException, ValueError) as e:
            # URLError, HTTPError, timeouts and refused connections are OSErrors; a transfer cut
            # short is an HTTPException (IncompleteRead); a bad Content-Length a ValueError.
            failures.append((url, "network", _describe(e)))
        finally:
            tmp.unlink(missing_ok=True)
    bad = [f for f in failures if f[1] == "checksum"]
    if bad:
        details = "; ".join(f"{url}: {why}" for url, _, why in bad)
        raise GenlabError(
            f"downloaded {remote.filename} but its checksum does not match the published one ({details})",
            "the download was corrupted or the mirror serves a different file; try again later, "
            f"or get the file by hand and put it in {dest_dir}",
        )
    raise _Unreachable("; ".join(f"{url}: {why}" for url, _, why in failures))


def _describe(error: OSError) -> str:
    # URLError wraps the socket error ("Connection refused"); HTTPError reads best as is.
    if isinstance(error, URLError) and not isinstance(error, HTTPError):
        return str(error.reason)
    return str(error)


def _missing_error(dataset: str, missing: list[RemoteFile], dest_dir: Path, reason: str) -> GenlabError:
    lines = [f"  {r.filename}  from  {' or '.join(r.urls)}" for r in missing]
    return GenlabError(
        f"cannot get {len(missing)} file(s) for {dataset}: {reason}",
        f"download them on a machine with internet access and put them in {dest_dir}/\n"
        + "\n".join(lines)
        + f"\n(or set GENLAB_DATA_DIR to a folder whose {dest_dir.name}/ sub-folder holds them)",
    )


def _existing(remote: RemoteFile, dest_dir: Path) -> Path | None:
    """The local copy if present and intact; None if absent; GenlabError if corrupted."""
    path = dest_dir / remote.filename
    if not path.is_file():
        return None
    mismatch = _checksum_mismatch(path, remote)
    if mismatch is not None:
        raise GenlabError(
            f"{path} is corrupted or not the expected file ({mismatch})",
            f"delete {path} so it is downloaded again (or replace it with the right file)",
        )
    return path


def _reason(detail: str | None) -> str:
    if detail is None:
        return "GENLAB_OFFLINE is set, so nothing is downloaded"
    return f"no download source could be reached, the machine appears offline ({detail})"


def fetch(remote: RemoteFile, dest_dir: Path, progress: bool = True) -> Path:
    """Return dest_dir/remote.filename, downloading and verifying it first if absent."""
    dest_dir = Path(dest_dir)
    path = _existing(remote, dest_dir)
    if path is not None:
        return path
    if offline_requested():
        raise _missing_error(remote.filename, [remote], dest_dir, _reason(None))
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _download(remote, dest_dir, progress)
    except _Unreachable as e:
        raise _missing_error(remote.filename, [remote], dest_dir, _reason(str(e))) from None


def ensure_files(dataset: str, files: list[RemoteFile], root: Path | None = None, progress: bool = True) -> list[Path]:
    """Make every file of `dataset` present and verified in root/dataset/; return their paths."""
    dest_dir = Path(root if root is not None else data_root()) / dataset
    paths = [_existing(r, dest_dir) for r in files]
    missing = [r for r, p in zip(files, paths) if p is None]
    if not missing:
        return paths
    if offline_requested():
        raise _missing_error(dataset, missing, dest_dir, _reason(None))
    dest_dir.mkdir(parents=True, exist_ok=True)
    for i, remote in enumerate(files):
        if paths[i] is not None:
            continue
        try:
            paths[i] = _download(remote, dest_dir, progress)
        except _Unreachable as e:
            # Name everything still missing, so one trip to a connected machine is enough.
            still_missing = [r for r, p in zip(files, paths) if p is None]
            raise _missing_error(dataset, still_missing, dest_dir, _reason(str(e))) from None
    return paths
