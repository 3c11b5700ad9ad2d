"""The shared output rule and atomic writers of approxsim._io."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from approxsim import ApproxsimError
from approxsim._io import (
    OutputExistsError,
    atomic_write_bytes,
    atomic_write_json,
    check_output,
    stale_temporaries,
)


def test_new_output_is_written(tmp_path: Path) -> None:
    out = atomic_write_json(tmp_path / "sub" / "r.json", {"a": 1}, overwrite=False)
    assert json.loads(out.read_text()) == {"a": 1}
    assert stale_temporaries(out.parent, ["r.json"]) == []


def test_existing_output_is_refused_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_text("old")
    with pytest.raises(OutputExistsError, match="--resume"):
        atomic_write_bytes(out, b"new", overwrite=False, flag="--resume")
    assert out.read_text() == "old"
    assert stale_temporaries(tmp_path, ["r.json"]) == []
    atomic_write_bytes(out, b"new", overwrite=True)
    assert out.read_text() == "new"


def test_an_input_is_never_an_output(tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    # Even with overwrite, and named by another spelling of the same path.
    other = tmp_path / "run" / ".." / "run" / "checkpoint.pt"
    with pytest.raises(OutputExistsError, match="input"):
        atomic_write_bytes(other, b"{}", overwrite=True, inputs=[ckpt, None])
    assert ckpt.read_bytes() == b"weights"


def test_a_folder_is_not_an_output_file(tmp_path: Path) -> None:
    with pytest.raises(OutputExistsError, match="folder"):
        check_output(tmp_path, overwrite=True)


def test_refusal_is_an_approxsim_error_and_a_file_exists_error(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    with pytest.raises(ApproxsimError):
        check_output(tmp_path / "x")
    with pytest.raises(FileExistsError):
        check_output(tmp_path / "x")


def test_a_file_appearing_after_the_check_is_not_clobbered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import approxsim._io as io_mod

    out = tmp_path / "r.json"
    real_check = io_mod.check_output

    def check_then_race(*args: object, **kw: object) -> Path:
        p = real_check(*args, **kw)  # type: ignore[arg-type]
        out.write_text("written by another process")
        return p

    monkeypatch.setattr(io_mod, "check_output", check_then_race)
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(out, b"mine", overwrite=False)
    assert out.read_text() == "written by another process"
    assert stale_temporaries(tmp_path, ["r.json"]) == []


def test_seal_detects_truncation_modification_and_foreign_files() -> None:
    from approxsim._io import SealError, seal, unseal

    sealed = seal(b"KIND/1\n", b"payload bytes")
    assert unseal(sealed, b"KIND/1\n", "f") == b"payload bytes"
    flipped = bytearray(sealed)
    flipped[-3] ^= 1
    for bad, reason in (
        (sealed[:-1], "checksum"),
        (bytes(flipped), "checksum"),
        (b"OTHER/1\n" + sealed[7:], "header"),
    ):
        with pytest.raises(SealError) as info:
            unseal(bad, b"KIND/1\n", "f")
        assert info.value.args[1] == reason
