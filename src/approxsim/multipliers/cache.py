"""approxsim's on-disk cache: location, privacy, locking and verified entries.

Entries are directories named by a SHA-256 key of everything that determines their content.
An entry is built in a private temporary directory and renamed into place, so a reader sees a
complete entry or none; a ``manifest.json`` lists the SHA-256 of every file, and an entry whose
files do not match is treated as absent (and replaced). Builders of the same key serialize on a
lock file so the work is done once.

The cache holds compiled code that approxsim loads into its process, so it trusts no one but
its owner (DESIGN §6): the cache folder, each section folder, each entry and each file of an
entry must belong to the current user and must not be writable by group or others, and no
folder above the cache may be owned by another user (or writable by others without the sticky
bit), since whoever controls it could swap the cache. Anything else raises :class:`CacheError`
before a byte of it is trusted; so does a cache that cannot be created or written.
Build folders left behind by killed processes are removed by the next build in their section.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from approxsim.errors import ApproxsimError

__all__ = [
    "cache_dir",
    "CacheEntry",
    "CacheError",
    "entry_lock",
    "read_entry",
    "publish_entry",
    "drop_entry",
    "get_or_build",
    "new_build_dir",
    "clean_stale",
    "STALE_AFTER_S",
]

#: A build or trash folder whose process is gone is removed once it is this old (seconds).
#: The age guards against removing the folder of a build running on another machine that
#: shares the cache (its process id means nothing here).
STALE_AFTER_S = 3600.0

_HINT = "set APPROXSIM_CACHE_DIR to a folder of your own that only you can write"


class CacheError(ApproxsimError, RuntimeError):
    """The cache cannot be used: it cannot be written, or a folder or file in it is owned or
    writable by someone else (so the compiled code in it cannot be trusted)."""


def _configured_root() -> Path:
    env = os.environ.get("APPROXSIM_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "approxsim"


def _unusable(path: Path, exc: OSError) -> CacheError:
    reason = exc.strerror or str(exc)
    return CacheError(f"the approxsim cache {path} cannot be written ({reason}); {_HINT}")


def _check_private(path: Path, st: os.stat_result, what: str) -> None:
    """Refuse ``path`` unless the current user owns it and only they can write it."""
    if st.st_uid != os.getuid():
        raise CacheError(
            f"the approxsim cache {what} {path} belongs to another user (uid {st.st_uid}), so "
            f"the compiled code in it cannot be trusted; {_HINT}"
        )
    if st.st_mode & 0o022:
        raise CacheError(
            f"the approxsim cache {what} {path} is writable by other users, so the compiled "
            f"code in it cannot be trusted; remove it (or run chmod go-w on it if only you "
            f"ever wrote there), or {_HINT}"
        )


def _check_ancestors(root: Path) -> None:
    """Refuse a cache inside a folder another user could rename or replace it in (the path
    as given, whose links another user could repoint, and the path the links lead to)."""
    given = root.absolute().parents
    for parent in dict.fromkeys([*given, *root.resolve().parents]):
        try:
            st = os.stat(parent)
        except OSError:
            continue
        foreign = st.st_uid not in (0, os.getuid())
        # World-writable without the sticky bit: anyone may rename what is inside (/tmp is
        # fine, it is sticky). Group-writable parents are tolerated (a user's private group).
        open_to_all = st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX
        if foreign or open_to_all:
            raise CacheError(
                f"the approxsim cache {root} lies inside {parent}, which "
                + ("belongs to another user" if foreign else "anyone can write")
                + f", so the compiled code in it cannot be trusted; {_HINT}"
            )


def cache_dir() -> Path:
    """The user's approxsim cache directory (created private, mode 0700), checked.

    ``$APPROXSIM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/approxsim``, else
    ``~/.cache/approxsim``.

    Returns:
        The cache folder.

    Raises:
        CacheError: it cannot be created (a file is in the way, a read-only file system); or
            it, or a folder above it, is owned or writable by another user.
    """
    root = _configured_root()
    if root.exists() and not root.is_dir():
        raise CacheError(f"the approxsim cache {root} is a file, not a folder; {_HINT}")
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise _unusable(root, exc) from None
    st = os.stat(root)
    _check_private(root, st, "folder")
    _check_ancestors(root)
    if st.st_mode & 0o077:
        # Readable by others (an existing folder made with a loose umask): tighten it.
        with contextlib.suppress(OSError):
            os.chmod(root, 0o700)
    return root


def _section_dir(section: str, *, create: bool) -> Path:
    """The checked folder of ``section`` (created private when ``create``)."""
    path = cache_dir() / section
    if create:
        try:
            path.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise _unusable(path, exc) from None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"the approxsim cache folder {path} is not a folder; {_HINT}")
    _check_private(path, st, "folder")
    return path


def _check_entry(path: Path) -> None:
    """Refuse an entry (and any file in it) that is not the current user's alone."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"the approxsim cache entry {path} is not a folder; remove it")
    _check_private(path, st, "entry")
    for item in path.iterdir():
        fst = os.lstat(item)
        if not stat.S_ISREG(fst.st_mode):
            raise CacheError(
                f"the approxsim cache file {item} is not a regular file; remove {path}"
            )
        _check_private(item, fst, "file")


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
    """Hold an exclusive lock for building entry ``key`` (no-op where flock is missing).

    Raises:
        CacheError: the cache cannot be written or is not private (see :func:`cache_dir`).
    """
    lock_path = _section_dir(section, create=True) / f"{key}.lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise _unusable(lock_path.parent, exc) from None
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

    Raises:
        CacheError: the cache, the section folder, the entry or a file in it is owned or
            writable by another user (nothing of it is read, let alone loaded).
    """
    path = _section_dir(section, create=False) / key
    if not os.path.lexists(path):
        return None
    _check_entry(path)
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
    path = _section_dir(section, create=False) / key
    if not path.exists():
        return
    trash = path.with_name(f".trash-{key}-{uuid.uuid4().hex}")
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _is_stale(item: Path, now: float) -> bool:
    """A ``.build-*``/``.trash-*`` folder of ours whose process is gone (see STALE_AFTER_S)."""
    try:
        st = os.lstat(item)
    except OSError:
        return False
    if st.st_uid != os.getuid() or now - st.st_mtime < STALE_AFTER_S:
        return False
    # Build folders carry their builder's process id: keep one whose process still runs.
    parts = item.name.split("-")
    if item.name.startswith(".build-") and len(parts) >= 4 and parts[2].isdigit():
        pid = int(parts[2])
        try:
            os.kill(pid, 0)
        except OSError:
            return True  # no such process, or another user's: not one of our builds
        # Alive (or the id was reused): a build never runs for a day.
        return now - st.st_mtime > 24 * STALE_AFTER_S
    return True


def clean_stale(section: str) -> list[Path]:
    """Remove the build and trash folders killed processes left in ``section``.

    Returns:
        The folders removed.
    """
    root = _section_dir(section, create=False)
    if not root.is_dir():
        return []
    now = time.time()
    removed = []
    for item in root.iterdir():
        if item.name.startswith((".build-", ".trash-")) and _is_stale(item, now):
            shutil.rmtree(item, ignore_errors=True)
            removed.append(item)
    return removed


def new_build_dir(section: str, key: str) -> Path:
    """A fresh private directory, beside the final entry, to build entry ``key`` in.

    Stale build folders of killed processes in the section are removed first.

    Raises:
        CacheError: the cache cannot be written or is not private.
    """
    root = _section_dir(section, create=True)
    clean_stale(section)
    try:
        return Path(tempfile.mkdtemp(prefix=f".build-{key[:16]}-{os.getpid()}-", dir=root))
    except OSError as exc:
        raise _unusable(root, exc) from None


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
    final = _section_dir(section, create=False) / key
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

    Raises:
        CacheError: the cache cannot be written (and holds no valid entry), or it or the entry
            is owned or writable by another user.
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
