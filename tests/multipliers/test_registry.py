"""The registry, and the Multiplier object itself: immutability, pickling, save/load."""

from __future__ import annotations

import copy
import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from mult_reference import FAMILIES, as_bits, lut_bits_grid, numpy_mitchell7

import approxsim
from approxsim.multipliers import registry


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(registry, "_FIXED", dict(registry._FIXED))
    monkeypatch.setattr(registry, "_CACHE", dict(registry._CACHE))


def scalar_mitchell_lut(m: int) -> np.ndarray:
    return lut_bits_grid(FAMILIES["mitchell"], m).view(np.float32)


# ----------------------------------------------------------------------------- listing
def test_list_mitchell_in_natural_order() -> None:
    assert approxsim.list_multipliers("mitchell*") == [f"mitchell{m}" for m in range(1, 12)]


def test_list_patterns() -> None:
    everything = approxsim.list_multipliers()
    assert {"fp32", "bf16", "bf16_trunc", "mbm7", "trunc11", "mitchell1"} <= set(everything)
    assert len(everything) == len(set(everything)) == 3 + 3 * 11
    assert approxsim.list_multipliers("mbm1*") == ["mbm1", "mbm10", "mbm11"]
    assert approxsim.list_multipliers("bf16*") == ["bf16", "bf16_trunc"]
    assert approxsim.list_multipliers("nothing*") == []
    assert approxsim.list_multipliers("*7") == ["mbm7", "mitchell7", "trunc7"]


@pytest.mark.parametrize("name", approxsim.list_multipliers())
def test_every_listed_name_builds(name: str) -> None:
    mult = approxsim.get_multiplier(name)
    assert mult.name == name
    assert approxsim.get_multiplier(name) is mult  # built once, then shared
    assert mult.provenance["builder"] == "builtin"


# ----------------------------------------------------------------------------- unknown names
@pytest.mark.parametrize("name", ["nope", "mitchell12", "mitchell0", "Mitchell7", "mbm", "fp16"])
def test_unknown_names(name: str) -> None:
    with pytest.raises(approxsim.UnknownMultiplierError) as info:
        approxsim.get_multiplier(name)
    msg = str(info.value)
    assert repr(name) in msg
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, approxsim.MultiplierError)
    if name == "nope":
        for known in ("fp32", "bf16", "bf16_trunc", "mitchell<M>", "mbm<M>", "trunc<M>"):
            assert known in msg
    if name in ("mitchell12", "mitchell0"):
        assert "1 to 11" in msg


def test_get_multiplier_rejects_non_strings_and_passes_multipliers() -> None:
    mult = approxsim.get_multiplier("mbm3")
    assert approxsim.get_multiplier(mult) is mult
    with pytest.raises(approxsim.MultiplierError, match="string"):
        approxsim.get_multiplier(7)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- registration
def test_register_multiplier(clean_registry: None) -> None:
    calls = []

    @approxsim.register_multiplier("my_mitchell5")
    def factory() -> approxsim.Multiplier:
        calls.append(1)
        return approxsim.Multiplier.from_lut(scalar_mitchell_lut(5), name="my_mitchell5")

    assert "my_mitchell5" in approxsim.list_multipliers("my_*")
    mult = approxsim.get_multiplier("my_mitchell5")
    assert approxsim.get_multiplier("my_mitchell5") is mult
    assert calls == [1]
    assert mult.fingerprint == approxsim.get_multiplier("mitchell5").fingerprint


@pytest.mark.parametrize("name", ["fp32", "bf16", "mitchell7", "trunc1", "mbm11"])
def test_register_refuses_builtin_names(clean_registry: None, name: str) -> None:
    with pytest.raises(approxsim.MultiplierError, match="already registered"):
        approxsim.register_multiplier(name)(lambda: approxsim.get_multiplier("fp32"))
    assert approxsim.get_multiplier(name).provenance["builder"] == "builtin"


def test_register_refuses_duplicates(clean_registry: None) -> None:
    approxsim.register_multiplier("twice")(lambda: approxsim.get_multiplier("mbm4"))
    with pytest.raises(approxsim.MultiplierError, match="already registered"):
        approxsim.register_multiplier("twice")(lambda: approxsim.get_multiplier("trunc4"))
    assert (
        approxsim.get_multiplier("twice").fingerprint
        == approxsim.get_multiplier("mbm4").fingerprint
    )


@pytest.mark.parametrize("name", ["", "has space", "semi;colon", 7])
def test_register_refuses_bad_names(clean_registry: None, name) -> None:
    with pytest.raises(approxsim.MultiplierError, match="names use"):
        approxsim.register_multiplier(name)


def test_factory_must_return_a_multiplier(clean_registry: None) -> None:
    approxsim.register_multiplier("not_a_mult")(lambda: "mitchell7")
    with pytest.raises(approxsim.MultiplierError, match="not a Multiplier"):
        approxsim.get_multiplier("not_a_mult")


# ----------------------------------------------------------------------------- immutability
@pytest.mark.parametrize(
    "attr", ["name", "mantissa_bits", "rounding", "_lut", "_fingerprint", "_name", "new_attr"]
)
def test_multiplier_is_immutable(attr: str) -> None:
    mult = approxsim.Multiplier.from_lut(scalar_mitchell_lut(4), name="m4")
    before = mult.fingerprint
    with pytest.raises(AttributeError):
        setattr(mult, attr, None)
    assert mult.fingerprint == before
    assert mult.name == "m4"


def test_lut_and_provenance_are_copies() -> None:
    mult = approxsim.get_multiplier("mitchell3")
    lut = mult.lut
    lut[0, 0] = 3.0
    assert mult.lut[0, 0].item() == 1.0
    prov = mult.provenance
    prov["builder"] = "tampered"
    assert mult.provenance["builder"] == "builtin"
    # The input array is copied, not aliased.
    arr = scalar_mitchell_lut(3).copy()
    own = approxsim.Multiplier.from_lut(arr)
    arr[0, 0] = 3.0
    assert own.lut[0, 0].item() == 1.0


def test_deleting_attributes_is_refused() -> None:
    mult = approxsim.Multiplier.from_lut(scalar_mitchell_lut(2), name="m2")
    with pytest.raises(AttributeError):
        del mult._lut


# ----------------------------------------------------------------------------- pickling
@pytest.mark.parametrize("name", ["mitchell7", "bf16", "fp32", "trunc11"])
def test_pickle_round_trip(name: str) -> None:
    mult = approxsim.get_multiplier(name)
    back = pickle.loads(pickle.dumps(mult))
    assert back is not mult
    assert back.fingerprint == mult.fingerprint
    assert back.name == mult.name
    assert back.rounding == mult.rounding
    assert back.provenance == mult.provenance
    x = torch.randn(500, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(as_bits(back(x, x.flip(0))), as_bits(mult(x, x.flip(0))))
    assert copy.deepcopy(mult).fingerprint == mult.fingerprint


def test_fingerprint_depends_on_what_determines_products() -> None:
    lut = scalar_mitchell_lut(3)
    a = approxsim.Multiplier.from_lut(lut, name="a")
    b = approxsim.Multiplier.from_lut(lut, name="b", provenance={"note": "x"})
    c = approxsim.Multiplier.from_lut(lut, rounding="nearest")
    lut2 = lut.copy()
    lut2[1, 1] = np.nextafter(lut2[1, 1], np.float32(4))
    d = approxsim.Multiplier.from_lut(lut2)
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3


# ----------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("name", ["mitchell7", "bf16", "mbm11"])
def test_save_load_round_trip(tmp_path: Path, name: str) -> None:
    mult = approxsim.get_multiplier(name)
    path = mult.save(tmp_path / f"{name}.npz")
    assert path == tmp_path / f"{name}.npz"
    back = approxsim.Multiplier.load(path)
    assert back.fingerprint == mult.fingerprint
    assert back.name == mult.name
    assert back.rounding == mult.rounding
    assert back.mantissa_bits == mult.mantissa_bits
    assert back.provenance == mult.provenance
    np.testing.assert_array_equal(as_bits(back.lut), as_bits(mult.lut))
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_save_python_built_and_load(tmp_path: Path) -> None:
    mult = approxsim.Multiplier.from_python(numpy_mitchell7, 7, name="py")
    back = approxsim.Multiplier.load(mult.save(str(tmp_path / "py.npz")))
    assert back.provenance["decomposability"] == mult.provenance["decomposability"]
    assert back.fingerprint == approxsim.get_multiplier("mitchell7").fingerprint


def test_save_exact_refused(tmp_path: Path) -> None:
    with pytest.raises(approxsim.MultiplierError, match="fp32"):
        approxsim.get_multiplier("fp32").save(tmp_path / "fp32.npz")


def _saved(tmp_path: Path, name: str = "mitchell3") -> tuple[Path, bytes]:
    path = approxsim.get_multiplier(name).save(tmp_path / "m.npz")
    return path, path.read_bytes()


def _tampered_lut(tmp_path: Path) -> bytes:
    """A well-formed file whose LUT no longer matches its recorded fingerprint."""
    path, _ = _saved(tmp_path)
    with np.load(path) as data:
        lut, meta = np.array(data["lut"]), str(data["meta"])
    lut[2, 5] = np.float32(1.5)
    buf = io.BytesIO()
    np.savez(buf, lut=lut, meta=np.array(meta))
    return buf.getvalue()


def _not_ours(tmp_path: Path) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, lut=scalar_mitchell_lut(3), meta=np.array(json.dumps({"format": "other"})))
    return buf.getvalue()


def _lut_byte_flipped(tmp_path: Path) -> bytes:
    path, raw = _saved(tmp_path)
    data = bytearray(raw)
    # A byte inside the stored lut.npy payload (the CRC no longer matches).
    start = raw.find(b"\x93NUMPY") + 200
    data[start] ^= 0x01
    return bytes(data)


DAMAGED = {
    "truncated": lambda t: _saved(t)[1][: len(_saved(t)[1]) // 2],
    "garbage": lambda t: b"this is not a zip file\n" * 20,
    "lut_byte_flipped": _lut_byte_flipped,
    "tampered_lut": _tampered_lut,
    "other_format": _not_ours,
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_damaged_file_is_refused(tmp_path: Path, damage: str) -> None:
    data = DAMAGED[damage](tmp_path)
    path = tmp_path / "damaged.npz"
    path.write_bytes(data)
    with pytest.raises(approxsim.MultiplierError, match="damaged|not a readable|not an approxsim"):
        approxsim.Multiplier.load(path)


def _central_directory_patch(raw: bytes, offset: int, value: int, mode: str) -> bytes:
    at = raw.find(b"PK\x01\x02") + offset
    data = bytearray(raw)
    old = struct.unpack("<H", raw[at : at + 2])[0]
    data[at : at + 2] = struct.pack("<H", old | value if mode == "or" else value)
    return bytes(data)


ZIP_DAMAGE = {
    # An interrupted copy leaves an empty file: np.load raises EOFError.
    "empty": lambda raw: b"",
    # The central directory's flag word gains the "encrypted" bit: zipfile raises RuntimeError.
    "encrypted_flag": lambda raw: _central_directory_patch(raw, 8, 1, "or"),
    # An unknown compression method: zipfile raises NotImplementedError.
    "compression_method": lambda raw: _central_directory_patch(raw, 10, 99, "set"),
}


@pytest.mark.parametrize("damage", sorted(ZIP_DAMAGE))
def test_damaged_zip_structure_is_refused_with_multiplier_error(
    tmp_path: Path, damage: str
) -> None:
    _, raw = _saved(tmp_path)
    path = tmp_path / "damaged.npz"
    path.write_bytes(ZIP_DAMAGE[damage](raw))
    with pytest.raises(approxsim.MultiplierError):
        approxsim.Multiplier.load(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        approxsim.Multiplier.load(tmp_path / "absent.npz")


# ----------------------------------------------------------------------------- from_lut checks
@pytest.mark.parametrize(
    ("lut", "match"),
    [
        (np.ones((4, 2), dtype=np.float32), "square"),
        (np.ones((3, 3), dtype=np.float32), "power of two"),
        (np.ones((4, 4), dtype=np.float64), "float32"),
        (np.full((4, 4), -1.0, dtype=np.float32), "positive normal"),
        (np.full((4, 4), np.inf, dtype=np.float32), "positive normal"),
        (np.full((4, 4), 1e-40, dtype=np.float32), "positive normal"),
    ],
    ids=["not-square", "not-pow2", "float64", "negative", "inf", "subnormal"],
)
def test_from_lut_validation(lut: np.ndarray, match: str) -> None:
    with pytest.raises(approxsim.MultiplierError, match=match):
        approxsim.Multiplier.from_lut(lut)


def test_from_lut_accepts_a_tensor() -> None:
    lut = torch.from_numpy(scalar_mitchell_lut(6))
    mult = approxsim.Multiplier.from_lut(lut, name="t")
    assert mult.fingerprint == approxsim.get_multiplier("mitchell6").fingerprint
    assert mult.provenance["builder"] == "lut"
