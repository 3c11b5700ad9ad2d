"""The cache trusts no one but its owner (DESIGN §6): foreign or shared folders and entries
are refused before anything in them is read or loaded, an unusable cache is a one-line error
naming it, the CPU kernel falls back to Numba instead, and killed builds are cleaned up."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import time
import warnings
from pathlib import Path

import pytest

from approxsim.multipliers import cache
from approxsim.multipliers.cmodel import compiler_identity, find_compiler
from approxsim.ops import _cpu_native

OTHER_UID = 12345
SECTION = "kernels"
KEY = "0" * 64

needs_root = pytest.mark.skipif(
    not hasattr(os, "getuid") or os.getuid() != 0,
    reason="simulating another user's folder needs chown, i.e. root",
)


def plant(root: Path, section: str, key: str, files: dict[str, bytes]) -> Path:
    """An entry with a matching manifest, as another user could forge it."""
    entry = root / section / key
    entry.mkdir(parents=True)
    for name, data in files.items():
        (entry / name).write_bytes(data)
    manifest = {
        "key": key,
        "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()},
        "meta": {},
    }
    (entry / "manifest.json").write_text(json.dumps(manifest))
    return entry


def assert_one_line(exc: pytest.ExceptionInfo[BaseException], *words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def never_build(build_dir: Path) -> dict[str, object]:
    raise AssertionError("a refused cache must not be built in")


# ------------------------------------------------------------------- foreign or shared folders
@needs_root
def test_cache_of_another_user_is_refused(isolated_cache: Path) -> None:
    plant(isolated_cache, SECTION, KEY, {"kernel.so": b"planted"})
    for p in [isolated_cache, *isolated_cache.rglob("*")]:
        os.chown(p, OTHER_UID, OTHER_UID)
    with pytest.raises(cache.CacheError) as exc:
        cache.get_or_build(SECTION, KEY, never_build)
    assert_one_line(exc, str(isolated_cache), "another user", "APPROXSIM_CACHE_DIR")


@needs_root
def test_cache_inside_a_folder_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, OTHER_UID, OTHER_UID)
    mine = theirs / "cache"  # ours, but they can rename it and put their own in its place
    monkeypatch.setenv("APPROXSIM_CACHE_DIR", str(mine))
    with pytest.raises(cache.CacheError) as exc:
        cache.cache_dir()
    assert_one_line(exc, str(theirs), "another user", "APPROXSIM_CACHE_DIR")


@needs_root
def test_link_in_a_folder_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    (theirs / "cache").symlink_to(mine)  # they could point it anywhere
    os.chown(theirs, OTHER_UID, OTHER_UID)
    monkeypatch.setenv("APPROXSIM_CACHE_DIR", str(theirs / "cache"))
    with pytest.raises(cache.CacheError, match="another user"):
        cache.cache_dir()


@needs_root
def test_entry_or_file_of_another_user_is_refused(isolated_cache: Path) -> None:
    entry = plant(isolated_cache, SECTION, KEY, {"kernel.so": b"planted"})
    for p in (isolated_cache, isolated_cache / SECTION):
        os.chmod(p, 0o700)
    os.chown(entry / "kernel.so", OTHER_UID, OTHER_UID)
    with pytest.raises(cache.CacheError, match="another user"):
        cache.read_entry(SECTION, KEY)
    os.chown(entry / "kernel.so", os.getuid(), os.getgid())
    os.chown(entry, OTHER_UID, OTHER_UID)
    with pytest.raises(cache.CacheError, match="another user"):
        cache.read_entry(SECTION, KEY)


@pytest.mark.parametrize("where", ["root", "section", "entry", "file"])
@pytest.mark.parametrize("bits", [0o020, 0o002])
def test_writable_by_others_is_refused(isolated_cache: Path, where: str, bits: int) -> None:
    entry = plant(isolated_cache, SECTION, KEY, {"kernel.so": b"planted"})
    for p in (isolated_cache, isolated_cache / SECTION, entry):
        os.chmod(p, 0o700)
    for f in entry.iterdir():
        os.chmod(f, 0o600)
    target = {
        "root": isolated_cache,
        "section": isolated_cache / SECTION,
        "entry": entry,
        "file": entry / "kernel.so",
    }[where]
    os.chmod(target, target.stat().st_mode | bits)
    with pytest.raises(cache.CacheError) as exc:
        cache.get_or_build(SECTION, KEY, never_build)
    assert_one_line(exc, str(target), "writable by other users", "APPROXSIM_CACHE_DIR")
    assert (entry / "kernel.so").read_bytes() == b"planted"  # refused, not silently "fixed"


def test_symlinked_file_in_an_entry_is_refused(isolated_cache: Path, tmp_path: Path) -> None:
    entry = plant(isolated_cache, SECTION, KEY, {"kernel.so": b"planted"})
    for p in (isolated_cache, isolated_cache / SECTION, entry):
        os.chmod(p, 0o700)
    (entry / "kernel.so").unlink()
    (tmp_path / "elsewhere.so").write_bytes(b"planted")
    (entry / "kernel.so").symlink_to(tmp_path / "elsewhere.so")
    with pytest.raises(cache.CacheError, match="not a regular file"):
        cache.read_entry(SECTION, KEY)


def test_private_cache_still_reuses_its_entries(isolated_cache: Path) -> None:
    calls = []

    def build(d: Path) -> dict[str, object]:
        calls.append(d)
        (d / "payload").write_bytes(b"x")
        return {"n": 1}

    first = cache.get_or_build(SECTION, KEY, build)
    second = cache.get_or_build(SECTION, KEY, build)
    assert len(calls) == 1 and first.path == second.path and second.meta == {"n": 1}


# ------------------------------------------------------ the CPU kernel never loads planted code
def compile_planted_kernel(tmp_path: Path, marker: Path) -> bytes:
    """A shared object whose constructor leaves ``marker``: proof that it was loaded."""
    src = tmp_path / "evil.c"
    src.write_text(
        "#include <stdio.h>\n"
        "__attribute__((constructor)) static void planted(void) {\n"
        f'  FILE *f = fopen("{marker}", "w"); if (f) fclose(f);\n'
        "}\n"
    )
    so = tmp_path / "evil.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    return so.read_bytes()


def kernel_key() -> str:
    exe = find_compiler("c++")
    key_src = "\n".join(
        [
            _cpu_native.SOURCE.read_text(),
            compiler_identity(exe),
            " ".join(_cpu_native.FLAGS),
            _cpu_native._cpu_signature(),
        ]
    )
    return hashlib.sha256(key_src.encode()).hexdigest()


@pytest.fixture
def fresh_kernel(monkeypatch: pytest.MonkeyPatch):
    """The CPU kernel loads afresh in this test (and again after it)."""
    monkeypatch.setattr(_cpu_native, "_WARNED", [])
    monkeypatch.delenv("APPROXSIM_CPU_KERNEL", raising=False)
    _cpu_native._load_library.cache_clear()
    yield
    _cpu_native._load_library.cache_clear()


@pytest.mark.parametrize("how", ["group-writable", "other user"])
def test_planted_kernel_is_never_loaded(
    isolated_cache: Path, tmp_path: Path, fresh_kernel: None, how: str
) -> None:
    if how == "other user" and os.getuid() != 0:
        pytest.skip("simulating another user's folder needs chown, i.e. root")
    marker = tmp_path / "constructor-ran"
    planted = compile_planted_kernel(tmp_path, marker)
    entry = plant(isolated_cache, "kernels", kernel_key(), {"kernel.so": planted})
    if how == "group-writable":
        os.chmod(isolated_cache, 0o777)
    else:
        for p in [isolated_cache, *isolated_cache.rglob("*")]:
            os.chown(p, OTHER_UID, OTHER_UID)
    with pytest.warns(RuntimeWarning, match="APPROXSIM_CACHE_DIR.*Numba kernel"):
        assert _cpu_native.load() is None
    assert not marker.exists(), "the planted shared object was loaded"
    assert (entry / "kernel.so").read_bytes() == planted


# ------------------------------------------------------------------------- an unusable cache
def test_cache_that_is_a_file_is_a_one_line_error(isolated_cache: Path, fresh_kernel: None) -> None:
    isolated_cache.write_text("not a folder")
    with pytest.raises(cache.CacheError) as exc:
        cache.get_or_build(SECTION, KEY, never_build)
    assert_one_line(exc, str(isolated_cache), "APPROXSIM_CACHE_DIR")
    with pytest.warns(RuntimeWarning, match="APPROXSIM_CACHE_DIR.*Numba kernel"):
        assert _cpu_native.load() is None


def test_cli_names_an_unusable_cache_in_one_line(
    isolated_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from approxsim.cli import main

    src = tmp_path / "exact.c"
    src.write_text("float mul(float a, float b) { return a * b; }\n")
    argv = ["multipliers", "show", "--c", str(src), "--function", "mul", "--mantissa-bits", "4"]
    isolated_cache.write_text("not a folder")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("approxsim: error: the approxsim cache")
    assert "is a file" in err and "APPROXSIM_CACHE_DIR" in err
    isolated_cache.unlink()
    isolated_cache.mkdir()
    os.chmod(isolated_cache, 0o777)
    assert main(argv) == 2
    assert "writable by other users" in capsys.readouterr().err


def test_read_only_cache_is_a_one_line_error(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.cache_dir()

    def read_only(*args: object, **kwargs: object) -> str:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(cache.tempfile, "mkdtemp", read_only)
    with pytest.raises(cache.CacheError) as exc:
        cache.get_or_build(SECTION, KEY, never_build)
    assert_one_line(exc, "Read-only file system", "APPROXSIM_CACHE_DIR")


def test_read_only_cache_still_serves_its_entries(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.get_or_build(SECTION, KEY, lambda d: (d / "payload").write_bytes(b"x") and {})

    def read_only(*args: object, **kwargs: object) -> str:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(cache.tempfile, "mkdtemp", read_only)
    assert cache.get_or_build(SECTION, KEY, never_build).path.name == KEY


# ------------------------------------------------------------------- builds of killed processes
def test_stale_build_folders_are_cleaned(isolated_cache: Path) -> None:
    section = isolated_cache / SECTION
    section.mkdir(parents=True)
    dead_pid = 2**22 + 12345  # above Linux's pid_max: no such process
    old = time.time() - 2 * cache.STALE_AFTER_S
    stale = [section / f".build-{KEY[:16]}-{dead_pid}-abc", section / f".trash-{KEY}-1"]
    legacy = section / f".build-{KEY[:16]}-xyz"  # written before builds carried a pid
    running = section / f".build-{KEY[:16]}-{os.getpid()}-def"  # a live build: kept
    recent = section / f".build-{KEY[:16]}-{dead_pid}-ghi"  # maybe a build on another host
    for d in [*stale, legacy, running, recent]:
        d.mkdir()
        (d / "model.so").write_bytes(b"half")
        if d is not recent:
            os.utime(d, (old, old))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.get_or_build(SECTION, KEY, lambda d: (d / "payload").write_bytes(b"x") and {})
    left = sorted(p.name for p in section.iterdir() if p.name.startswith("."))
    assert left == sorted([running.name, recent.name])
