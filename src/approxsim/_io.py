"""Atomic file writes: the one helper every approxsim writer uses (DESIGN §6).

A file is written to a temporary file in the same folder (so the final rename never crosses a
file system), flushed and fsynced, then renamed over the destination: a reader, or a run
killed at any moment, sees the old file or the whole new one, never a mixture. A failed write
removes its temporary file. Temporary files are named ``.<name>.<random>.tmp``, so
:func:`stale_temporaries` can find the ones a killed process left behind.

The one rule for outputs a user names (DESIGN §6): a command never replaces a file it was not
asked to replace, and never writes over one of its own inputs. :func:`check_output` applies it
(call it before the long work, so a refusal costs nothing), and ``overwrite=False`` on the
writers applies it again at the moment of writing, without a window: the new file is linked
into place, which fails if another process created the name meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from approxsim.errors import ApproxsimError

__all__ = [
    "OutputExistsError",
    "check_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_lines",
    "append_line",
    "seal",
    "unseal",
    "SealError",
    "is_temporary_of",
    "stale_temporaries",
]


class OutputExistsError(ApproxsimError, FileExistsError):
    """An output would replace a file the command was not asked to replace, or one of its
    own inputs."""


Inputs = Iterable["str | os.PathLike[str] | None"]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_output(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Inputs = (),
    flag: str = "--overwrite",
) -> Path:
    """Check that ``path`` may be written by a command: refuse an existing file unless
    ``overwrite``, and always refuse a folder or one of the command's inputs.

    Args:
        path: The output file the user named.
        overwrite: The user asked to replace an existing file (``--overwrite``, ``--resume``).
        inputs: Files the command reads (checkpoints, result files it resumes from, data);
            ``None`` entries are ignored. An output that is one of them is always refused.
        flag: The option that allows replacing, named in the message.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputExistsError: the output exists (without ``overwrite``), is a folder, or is an
            input of the command.
    """
    p = Path(path)
    for item in inputs:
        if item is not None and _same_file(p, Path(item)):
            raise OutputExistsError(
                f"{p} is an input of this command; writing the result there would destroy it. "
                "Name another output file"
            )
    if p.is_dir():
        raise OutputExistsError(f"{p} is a folder; name an output file")
    if not overwrite and (p.exists() or p.is_symlink()):
        raise OutputExistsError(f"{p} exists; pass {flag} to replace it, or name another file")
    return p


def atomic_write_bytes(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int | None = None,
    overwrite: bool = True,
    inputs: Inputs = (),
    flag: str = "--overwrite",
) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    Args:
        path: Destination file; its folder is created when missing.
        data: The whole new contents.
        mode: Permission bits of the new file; ``None``: what ``open(path, "w")`` would give
            (0o666 less the umask).
        overwrite: Replace an existing file. ``False`` applies :func:`check_output`'s rule and
            publishes without replacing (a file that appears meanwhile is not clobbered).
        inputs: The command's inputs; ``path`` may never be one of them.
        flag: The option that allows replacing, named in the refusal.

    Returns:
        The path written.

    Raises:
        OutputExistsError: as :func:`check_output`.
    """
    p = check_output(path, overwrite=overwrite, inputs=inputs, flag=flag)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode if mode is not None else _default_mode())
        if overwrite:
            os.replace(tmp, p)
        else:
            _publish_new(tmp, p, flag)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _publish_new(tmp: str, p: Path, flag: str) -> None:
    # A hard link fails if the name exists: no window between the check and the write.
    try:
        os.link(tmp, p)
    except FileExistsError:
        raise OutputExistsError(
            f"{p} exists; pass {flag} to replace it, or name another file"
        ) from None
    except OSError:
        # A file system without hard links: the check above is all the protection there is.
        if p.exists():
            raise OutputExistsError(
                f"{p} exists; pass {flag} to replace it, or name another file"
            ) from None
        os.replace(tmp, p)
        return
    os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str, **kw: Any) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; keywords as :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"), **kw)


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 1, **kw: Any
) -> Path:
    """Write ``obj`` as JSON (one trailing newline) to ``path`` atomically; keywords as
    :func:`atomic_write_bytes`."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n", **kw)


def atomic_write_lines(path: str | os.PathLike[str], records: Iterable[Any], **kw: Any) -> Path:
    """Write one JSON object per line (JSON Lines) to ``path`` atomically; keywords as
    :func:`atomic_write_bytes`."""
    return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records), **kw)


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


# ---------------------------------------------------------------------------- sealed files
_DIGEST_LEN = 64  # hex SHA-256


class SealError(ApproxsimError, ValueError):
    """A sealed file is not of the expected kind, or its contents do not match its checksum."""


def seal(magic: bytes, payload: bytes) -> bytes:
    """``payload`` behind a header that names its kind and carries its SHA-256.

    The layout is ``magic`` (one line, ending in ``\\n``), the hex SHA-256 of the payload and a
    newline, then the payload: :func:`unseal` detects a truncated, modified or foreign file.
    Checkpoints and perturbation files use it.
    """
    if not magic.endswith(b"\n"):
        raise ValueError("a seal's magic is one line ending in a newline")
    return magic + hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n" + payload


def unseal(raw: bytes, magic: bytes, what: str) -> bytes:
    """The payload of a file written by :func:`seal`, checked.

    Args:
        raw: The file's bytes.
        magic: The header line the file must start with.
        what: The file, for messages (its path and kind, e.g. ``"run/checkpoint.pt"``).

    Raises:
        SealError: the header is not ``magic``, or the checksum does not match (``args[1]``
            is ``"header"`` or ``"checksum"``, so callers can word their own message).
    """
    if not raw.startswith(magic):
        raise SealError(f"{what} does not start with the expected header", "header")
    head = len(magic)
    digest = raw[head : head + _DIGEST_LEN]
    payload = raw[head + _DIGEST_LEN + 1 :]
    if raw[head + _DIGEST_LEN : head + _DIGEST_LEN + 1] != b"\n" or (
        hashlib.sha256(payload).hexdigest().encode("ascii") != digest
    ):
        raise SealError(f"{what} is damaged: its checksum does not match its contents", "checksum")
    return payload
