"""The C-model cache: reuse, keys, damage recovery, privacy and concurrent builders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from mult_c_sources import BROKEN_C, EXACT_C, MITCHELL_C
from mult_reference import as_bits

import approxsim
import approxsim.multipliers.cmodel as cmodel
from approxsim.multipliers import cache

ENTRY_FILES = {"model.c", "harness.c", "model.so", "lut.npy", "manifest.json"}


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the function name of every compile_model call."""
    calls: list[str] = []
    real = cmodel.compile_model

    def counting(text, function, *args, **kwargs):
        calls.append(function)
        return real(text, function, *args, **kwargs)

    monkeypatch.setattr(cmodel, "compile_model", counting)
    return calls


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "mitchell.c"
    path.parent.mkdir()
    path.write_text(MITCHELL_C)
    return path


@pytest.fixture(scope="module")
def prebuilt_entry(module_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete cache entry of the Mitchell model, built once for the module."""
    src = tmp_path_factory.mktemp("prebuilt-src") / "mitchell.c"
    src.write_text(MITCHELL_C)
    mult = approxsim.Multiplier.from_c(src, "mitchell_mul", 7)
    return module_cache / "c-models" / mult.provenance["cache_key"]


@pytest.fixture
def seeded(prebuilt_entry: Path, isolated_cache: Path, source: Path) -> Path:
    """This test's cache already holds the entry for ``source`` (the key covers the text,
    not the path, so a copy of the prebuilt entry is that entry); returns its directory."""
    section = isolated_cache / "c-models"
    section.mkdir(parents=True, mode=0o700)
    return Path(shutil.copytree(prebuilt_entry, section / prebuilt_entry.name))


def entries(root: Path) -> list[Path]:
    section = root / "c-models"
    return sorted(p for p in section.iterdir() if p.is_dir() and not p.name.startswith("."))


def leftovers(root: Path) -> list[str]:
    section = root / "c-models"
    return sorted(p.name for p in section.iterdir() if p.name.startswith("."))


def mitchell7_lut() -> np.ndarray:
    return approxsim.get_multiplier("mitchell7").lut.numpy()


# ----------------------------------------------------------------------------- reuse and keys
def test_second_build_reuses_the_entry(
    source: Path, compiles: list[str], monkeypatch: pytest.MonkeyPatch, isolated_cache: Path
) -> None:
    first = approxsim.Multiplier.from_c(source, "mitchell_mul", 7)
    assert compiles == ["mitchell_mul"]
    key = first.provenance["cache_key"]
    assert [p.name for p in entries(isolated_cache)] == [key]
    assert {p.name for p in (isolated_cache / "c-models" / key).iterdir()} == ENTRY_FILES

    def no_compiling(*args, **kwargs):
        raise AssertionError("the cached model was compiled again")

    monkeypatch.setattr(cmodel, "compile_model", no_compiling)
    second = approxsim.Multiplier.from_c(source, "mitchell_mul", 7)
    assert (
        second.fingerprint == first.fingerprint == approxsim.get_multiplier("mitchell7").fingerprint
    )
    assert second.provenance == first.provenance
    # The report name is not part of the key.
    renamed = approxsim.Multiplier.from_c(source, "mitchell_mul", 7, name="mine")
    assert renamed.name == "mine"
    assert renamed.fingerprint == first.fingerprint


@pytest.mark.parametrize("change", ["source", "mantissa_bits", "flags", "function", "seed"])
def test_a_change_gives_a_new_key(
    source: Path, seeded: Path, compiles: list[str], isolated_cache: Path, change: str
) -> None:
    base = approxsim.Multiplier.from_c(source, "mitchell_mul", 7)
    assert compiles == []
    assert base.provenance["cache_key"] == seeded.name
    function, m, kwargs = "mitchell_mul", 7, {}
    if change == "source":
        source.write_text(MITCHELL_C + "\n/* edited */\n")
    elif change == "mantissa_bits":
        m, kwargs = 6, {"accept_mismatch": True}  # a 7-bit model seen through a 6-bit port
    elif change == "flags":
        kwargs = {"flags": ["-DAPPROXSIM_TEST_UNUSED=1"]}
    elif change == "function":
        function = "mitchell_mul_alias"
    elif change == "seed":
        kwargs = {"seed": 1}
    new = approxsim.Multiplier.from_c(source, function, m, **kwargs)
    assert compiles == [function]
    assert new.provenance["cache_key"] != base.provenance["cache_key"]
    assert len(entries(isolated_cache)) == 2
    want = "mitchell6" if change == "mantissa_bits" else "mitchell7"
    assert new.fingerprint == approxsim.get_multiplier(want).fingerprint


def test_refused_model_is_cached_and_still_refused(
    tmp_path: Path, compiles: list[str], isolated_cache: Path
) -> None:
    path = tmp_path / "exact.c"
    path.write_text(EXACT_C)
    with pytest.raises(approxsim.NotDecomposableError):
        approxsim.Multiplier.from_c(path, "exact_mul", 7)
    accepted = approxsim.Multiplier.from_c(path, "exact_mul", 7, accept_mismatch=True)
    assert accepted.provenance["decomposability"]["mismatch_rate"] > 0
    with pytest.raises(approxsim.NotDecomposableError):
        approxsim.Multiplier.from_c(path, "exact_mul", 7)
    assert compiles == ["exact_mul"]
    assert len(entries(isolated_cache)) == 1


def test_failed_compiles_leave_nothing_behind(
    tmp_path: Path, compiles: list[str], isolated_cache: Path
) -> None:
    path = tmp_path / "broken.c"
    path.write_text(BROKEN_C)
    for _ in range(2):
        with pytest.raises(approxsim.CompilerError):
            approxsim.Multiplier.from_c(path, "broken_mul", 7)
    assert compiles == ["broken_mul", "broken_mul"]  # failures are not cached
    assert entries(isolated_cache) == []
    assert leftovers(isolated_cache) == []


def test_default_location_follows_xdg(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APPROXSIM_CACHE_DIR")
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    mult = approxsim.Multiplier.from_c(source, "mitchell_mul", 7)
    assert (xdg / "approxsim" / "c-models" / mult.provenance["cache_key"] / "lut.npy").is_file()


# ----------------------------------------------------------------------------- damage
def _flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


DAMAGE = {
    "lut_replaced_by_valid_npy": lambda e: np.save(
        e / "lut.npy", approxsim.get_multiplier("trunc7").lut.numpy()
    ),
    "lut_byte_flipped": lambda e: _flip_byte(e / "lut.npy"),
    "lut_deleted": lambda e: (e / "lut.npy").unlink(),
    "library_deleted": lambda e: (e / "model.so").unlink(),
    "source_copy_deleted": lambda e: (e / "model.c").unlink(),
    "manifest_deleted": lambda e: (e / "manifest.json").unlink(),
    "manifest_truncated": lambda e: (e / "manifest.json").write_text('{"key": '),
    "manifest_of_another_key": lambda e: (e / "manifest.json").write_text(
        json.dumps({**json.loads((e / "manifest.json").read_text()), "key": "0" * 64})
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_entry_warns_and_is_rebuilt(
    source: Path, seeded: Path, compiles: list[str], isolated_cache: Path, damage: str
) -> None:
    entry = seeded
    DAMAGE[damage](entry)
    with pytest.warns(UserWarning, match="damaged"):
        again = approxsim.Multiplier.from_c(source, "mitchell_mul", 7)
    assert compiles == ["mitchell_mul"]
    np.testing.assert_array_equal(again.lut.numpy(), mitchell7_lut())
    assert again.provenance["cache_key"] == entry.name
    # The rebuilt entry is whole again: the next build neither warns nor compiles.
    assert {p.name for p in entry.iterdir()} == ENTRY_FILES
    np.testing.assert_array_equal(np.load(entry / "lut.npy"), mitchell7_lut())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = approxsim.Multiplier.from_c(source, "mitchell_mul", 7)
    assert compiles == ["mitchell_mul"]
    assert third.fingerprint == approxsim.get_multiplier("mitchell7").fingerprint
    assert leftovers(isolated_cache) == []


# ----------------------------------------------------------------------------- privacy
def test_cache_is_private(source: Path, isolated_cache: Path) -> None:
    isolated_cache.mkdir(mode=0o755)
    os.chmod(isolated_cache, 0o755)  # an existing, world-readable directory is tightened
    old = os.umask(0)  # the most permissive umask: privacy must not depend on the user's
    try:
        mult = approxsim.Multiplier.from_c(source, "mitchell_mul", 7)
    finally:
        os.umask(old)
    key = mult.provenance["cache_key"]
    section = isolated_cache / "c-models"
    entry = section / key
    paths = [isolated_cache, section, entry, *entry.iterdir(), *section.glob("*.lock")]
    assert len(paths) >= 3 + len(ENTRY_FILES)
    for p in paths:
        assert p.stat().st_mode & 0o077 == 0, f"{p} has mode {oct(p.stat().st_mode)}"


# ----------------------------------------------------------------------------- concurrency
CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    import approxsim
    import approxsim.multipliers.cmodel as cmodel

    source, ready, go, log = (Path(p) for p in sys.argv[1:5])
    real = cmodel.compile_model

    def counting(*args, **kwargs):
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(fd, b"compile\\n")
        os.close(fd)
        return real(*args, **kwargs)

    cmodel.compile_model = counting
    ready.touch()
    while not go.exists():
        time.sleep(0.002)
    m = approxsim.Multiplier.from_c(source, "mitchell_mul", 7)
    print(m.fingerprint, m.provenance["cache_key"])
    """
)


def test_concurrent_builders_share_one_entry(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_root = tmp_path / "shared-cache"
    env = {**os.environ, "APPROXSIM_CACHE_DIR": str(cache_root), "OMP_NUM_THREADS": "1"}
    go = tmp_path / "go"
    log = tmp_path / "compiles.log"
    procs, readies = [], []
    for k in range(3):
        ready = tmp_path / f"ready-{k}"
        readies.append(ready)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", CHILD, str(source), str(ready), str(go), str(log)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        # A start barrier, so the three reach from_c together (not a timing assertion).
        deadline = time.monotonic() + 300
        while not all(r.exists() for r in readies):
            dead = [p for p in procs if p.poll() is not None]
            assert not dead, dead[0].communicate()[1]
            assert time.monotonic() < deadline, "children did not start"
            time.sleep(0.01)
        go.touch()
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    lines = {out.strip() for out, _ in results}
    assert len(lines) == 1, lines
    fingerprint, key = lines.pop().split()
    assert fingerprint == approxsim.get_multiplier("mitchell7").fingerprint
    assert log.read_text().splitlines() == ["compile"]  # built once, the others waited
    assert [p.name for p in entries(cache_root)] == [key]
    assert leftovers(cache_root) == []
    monkeypatch.setenv("APPROXSIM_CACHE_DIR", str(cache_root))
    entry = cache.read_entry("c-models", key)
    assert entry is not None
    np.testing.assert_array_equal(np.load(entry.path / "lut.npy"), mitchell7_lut())
    np.testing.assert_array_equal(
        as_bits(approxsim.Multiplier.from_c(source, "mitchell_mul", 7).lut),
        as_bits(approxsim.get_multiplier("mitchell7").lut),
    )
