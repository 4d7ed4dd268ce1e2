"""What a finished piece of work was made from and what it wrote, checked cheaply.

A file is identified by its size, modification time and SHA-256. Checking it costs one
``stat`` while size and time are unchanged; when only the time changed (a copy, a
``touch``) the checksum decides, and ``verify=True`` always re-reads the file. Checksums of
unchanged files are remembered for the life of the process.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ._utils import sha256_file

__all__ = ["content_sha256", "fingerprint", "fingerprint_tree", "stale_reason"]

_CHECKSUMS: dict[tuple[str, int, int], str] = {}


def fingerprint(path: str | os.PathLike, sha256: str | None = None) -> dict:
    """``{"size", "mtime_ns", "sha256"}`` of a file (``sha256`` if already computed)."""
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256 or _checksum(Path(path), stat)}


def fingerprint_tree(root: Path, paths) -> dict[str, dict]:
    """Fingerprints of the files at ``paths`` (files, or folders: every file below),
    keyed by their path relative to ``root``."""
    files = {}
    for path in map(Path, paths):
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file() and not file.name.endswith((".lock", ".tmp")):
                files[file.relative_to(root).as_posix()] = fingerprint(file)
    return files


def stale_reason(path: str | os.PathLike, recorded: dict, *, verify: bool = False) -> str | None:
    """Why ``path`` no longer matches its ``recorded`` fingerprint, or None if it does."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return f"{path} is missing"
    except OSError as error:
        return f"{path} cannot be read ({error.strerror or error})"
    if stat.st_size != recorded.get("size"):
        return f"{path} changed size ({recorded.get('size')} -> {stat.st_size} bytes)"
    if verify or stat.st_mtime_ns != recorded.get("mtime_ns"):
        try:
            checksum = _checksum(Path(path), stat, fresh=verify)
        except OSError as error:
            return f"{path} cannot be read ({error.strerror or error})"
        if checksum != recorded.get("sha256"):
            return f"{path} changed content (SHA-256 differs)"
    return None


def content_sha256(path: str | os.PathLike | None) -> str | None:
    """SHA-256 of a file, or of a folder's files (names and contents, sorted); None for None."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()


def _checksum(path: Path, stat: os.stat_result, fresh: bool = False) -> str:
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if fresh or key not in _CHECKSUMS:
        _CHECKSUMS[key] = sha256_file(path)
    return _CHECKSUMS[key]
