"""Atomic file writes: the one helper every approxsim writer uses (DESIGN §6).

A file is written to a temporary file in the same folder (so the final rename never crosses a
file system), flushed and fsynced, then renamed over the destination: a reader, or a run
killed at any moment, sees the old file or the whole new one, never a mixture. A failed write
removes its temporary file. Temporary files are named ``.<name>.<random>.tmp``, so
:func:`stale_temporaries` can find the ones a killed process left behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_lines",
    "append_line",
    "is_temporary_of",
    "stale_temporaries",
]


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    Args:
        path: Destination file; its folder is created when missing.
        data: The whole new contents.
        mode: Permission bits of the new file; ``None`` keeps ``mkstemp``'s private 0o600
            widened by the process umask as an ordinary ``open`` would create it.

    Returns:
        The path written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode if mode is not None else _default_mode())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON (one trailing newline) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_write_lines(path: str | os.PathLike[str], records: Iterable[Any]) -> Path:
    """Write one JSON object per line (JSON Lines) to ``path`` atomically."""
    return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def append_line(path: str | os.PathLike[str], record: Any) -> None:
    """Append ``record`` as one JSON line and fsync it, so a finished line survives a crash.

    A crash in the middle of the write can leave a truncated last line; readers of JSON Lines
    files written this way ignore a last line that does not parse.
    """
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def is_temporary_of(candidate: Path, names: Iterable[str]) -> bool:
    """Whether ``candidate`` is a temporary file :func:`atomic_write_bytes` made for one of
    ``names`` (``.<name>.<random>.tmp``)."""
    return candidate.name.endswith(".tmp") and candidate.name.startswith(
        tuple(f".{n}." for n in names)
    )


def stale_temporaries(folder: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Temporary files in ``folder`` left by interrupted atomic writes of ``names``."""
    d = Path(folder)
    if not d.is_dir():
        return []
    names = tuple(names)
    return sorted(p for p in d.iterdir() if is_temporary_of(p, names))


def _default_mode() -> int:
    # What open(..., "w") would give: 0o666 less the umask (read without changing it for good).
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
