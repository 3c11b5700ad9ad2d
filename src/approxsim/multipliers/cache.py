"""approxsim's on-disk cache: location, privacy, locking and verified entries.

Entries are directories named by a SHA-256 key of everything that determines their content.
An entry is built in a private temporary directory and renamed into place, so a reader sees a
complete entry or none; a ``manifest.json`` lists the SHA-256 of every file, and an entry whose
files do not match is treated as absent (and replaced). Builders of the same key serialize on a
lock file so the work is done once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "cache_dir",
    "CacheEntry",
    "entry_lock",
    "read_entry",
    "publish_entry",
    "drop_entry",
    "get_or_build",
]


def cache_dir() -> Path:
    """The user's approxsim cache directory (created private, mode 0700).

    ``$APPROXSIM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/approxsim``, else
    ``~/.cache/approxsim``.
    """
    env = os.environ.get("APPROXSIM_CACHE_DIR")
    if env:
        root = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = Path(base) / "approxsim"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(root, 0o700)
    return root


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class CacheEntry:
    """A verified, complete cache entry: a directory and its manifest's ``meta``."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta


@contextlib.contextmanager
def entry_lock(section: str, key: str) -> Iterator[None]:
    """Hold an exclusive lock for building entry ``key`` (no-op where flock is missing)."""
    root = cache_dir() / section
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_path = root / f"{key}.lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_entry(section: str, key: str, *, repair: bool = False) -> CacheEntry | None:
    """Return the entry if it exists and every file matches its manifest, else ``None``.

    With ``repair=True`` (call it only while holding :func:`entry_lock`) a damaged entry
    (missing or altered files, unreadable manifest) is reported and removed; without it a
    damaged entry is just treated as absent, so a lock-free reader never deletes an entry that
    a builder is replacing.
    """
    path = cache_dir() / section / key
    if not path.exists():
        return None
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        files = manifest["files"]
        for name, digest in files.items():
            if _sha256_file(path / name) != digest:
                raise ValueError(f"{name} does not match its checksum")
        if manifest.get("key") != key:
            raise ValueError("manifest key mismatch")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if not repair:
            return None
        import warnings

        warnings.warn(
            f"approxsim cache entry {path} is damaged ({exc}); rebuilding it", stacklevel=3
        )
        drop_entry(section, key)
        return None
    return CacheEntry(path, manifest.get("meta", {}))


def drop_entry(section: str, key: str) -> None:
    """Remove an entry (renamed aside first, so no reader sees it half-deleted)."""
    path = cache_dir() / section / key
    if not path.exists():
        return
    trash = path.with_name(f".trash-{key}-{uuid.uuid4().hex}")
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def new_build_dir(section: str, key: str) -> Path:
    """A fresh private directory, beside the final entry, to build entry ``key`` in."""
    root = cache_dir() / section
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Path(tempfile.mkdtemp(prefix=f".build-{key[:16]}-", dir=root))


def publish_entry(section: str, key: str, build_dir: Path, meta: dict[str, Any]) -> CacheEntry:
    """Write the manifest of ``build_dir`` and rename it into place as entry ``key``.

    If another builder published the same key first, its entry is kept and ``build_dir``
    is discarded.
    """
    files = {
        p.name: _sha256_file(p)
        for p in sorted(build_dir.iterdir())
        if p.is_file() and p.name != "manifest.json"
    }
    for p in build_dir.iterdir():
        os.chmod(p, 0o700 if p.suffix == ".so" else 0o600)
    manifest = {"key": key, "files": files, "meta": meta}
    (build_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.chmod(build_dir / "manifest.json", 0o600)
    final = cache_dir() / section / key
    try:
        os.rename(build_dir, final)
    except OSError:
        # Someone else published first (rename onto a non-empty directory fails): use theirs.
        shutil.rmtree(build_dir, ignore_errors=True)
        entry = read_entry(section, key, repair=True)
        if entry is None:
            raise
        return entry
    return CacheEntry(final, meta)


def get_or_build(section: str, key: str, build: Callable[[Path], dict[str, Any]]) -> CacheEntry:
    """The verified entry ``key``; if it is absent or damaged, build it once and publish it.

    ``build(build_dir)`` writes the entry's files into a fresh private directory and returns
    the manifest's ``meta``. Builders of the same key wait on the entry's lock, so concurrent
    processes build it once; a failed build leaves nothing behind.
    """
    entry = read_entry(section, key)
    if entry is not None:
        return entry
    with entry_lock(section, key):
        entry = read_entry(section, key, repair=True)  # built meanwhile?
        if entry is not None:
            return entry
        build_dir = new_build_dir(section, key)
        try:
            meta = build(build_dir)
            return publish_entry(section, key, build_dir, meta)
        except BaseException:
            shutil.rmtree(build_dir, ignore_errors=True)
            raise
