"""ApproxTrain LUT files: Multiplier.from_approxtrain_lut and write_approxtrain_lut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mult_reference import (
    FAMILIES,
    MantissaModel,
    as_bits,
    assert_same_bits,
    from_bits,
    normal_bits,
    reference_products,
)

import approxsim
from approxsim.multipliers import read_approxtrain_lut, write_approxtrain_lut


def approxtrain_bytes(model: MantissaModel, m: int) -> bytes:
    """ApproxTrain's format, from the scalar model: row = operand A's index, one byte each.

    byte = carry << 7 | top M bits of the normalized product fraction (carry: product >= 2).
    """
    n = 1 << m
    shift = 23 - m
    out = bytearray()
    for i in range(n):
        for j in range(n):
            carry, frac = model(i << shift, j << shift, m)
            assert carry in (0, 1) and frac & ((1 << shift) - 1) == 0
            out.append(carry << 7 | frac >> shift)
    return bytes(out)


def write_file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("family", "m"), [("mitchell", 7), ("mbm", 7), ("mitchell", 3), ("mbm", 5)]
)
def test_file_from_scalar_model_reproduces_builtin(tmp_path: Path, family: str, m: int) -> None:
    name = f"{family}{m}"
    path = write_file(tmp_path, f"{family.upper()}_{m}.bin", approxtrain_bytes(FAMILIES[family], m))
    mult = approxsim.Multiplier.from_approxtrain_lut(path)
    builtin = approxsim.get_multiplier(name)
    assert mult.mantissa_bits == m  # inferred from the name
    assert mult.rounding == "truncate"
    assert mult.name == f"{family.upper()}_{m}"
    np.testing.assert_array_equal(as_bits(mult.lut), as_bits(builtin.lut))
    assert mult.fingerprint == builtin.fingerprint
    prov = mult.provenance
    assert prov["builder"] == "approxtrain_lut"
    assert prov["file"] == path.name
    rng = np.random.default_rng(m)
    a, b = normal_bits(rng, 5000), normal_bits(rng, 5000)
    assert_same_bits(mult(from_bits(a), from_bits(b)), reference_products(name, a, b), a, b)


def test_mantissa_bits_given_explicitly(tmp_path: Path) -> None:
    data = approxtrain_bytes(FAMILIES["mitchell"], 4)
    path = write_file(tmp_path, "my_table.bin", data)
    mult = approxsim.Multiplier.from_approxtrain_lut(path, 4, name="mine")
    assert mult.name == "mine"
    assert mult.fingerprint == approxsim.get_multiplier("mitchell4").fingerprint
    # An explicit M wins over the one in the name.
    path = write_file(tmp_path, "MIT_7.bin", data)
    assert approxsim.Multiplier.from_approxtrain_lut(path, mantissa_bits=4).mantissa_bits == 4


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    for name in ("mitchell7", "mbm7", "mbm2", "bf16_trunc"):
        mult = approxsim.get_multiplier(name)
        m = mult.mantissa_bits
        path = write_approxtrain_lut(mult, tmp_path / f"{name}_{m}.bin")
        assert path.stat().st_size == 4**m
        if name in ("mitchell7", "mbm7"):
            family = name[:-1]
            assert path.read_bytes() == approxtrain_bytes(FAMILIES[family], 7)
        back = read_approxtrain_lut(path)
        assert back.fingerprint == mult.fingerprint, name


@pytest.mark.parametrize("name", ["trunc7", "fp32", "mitchell8"])
def test_write_refuses_what_the_format_cannot_hold(tmp_path: Path, name: str) -> None:
    with pytest.raises(approxsim.MultiplierError, match="ApproxTrain"):
        write_approxtrain_lut(approxsim.get_multiplier(name), tmp_path / "x_7.bin")
    assert not (tmp_path / "x_7.bin").exists()


@pytest.mark.parametrize(
    ("filename", "size", "mantissa_bits", "match"),
    [
        ("MBM_7.bin", 4**7 - 1, None, "bytes"),
        ("MBM_7.bin", 4**7 + 1, None, "bytes"),
        ("MBM_7.bin", 4 * 4**7, None, "uint32"),
        ("MBM_6.bin", 4**7, None, "bytes"),
        ("mbm.bin", 4**7, None, "NAME_<M>.bin"),
        ("MBM_seven.bin", 4**7, None, "NAME_<M>.bin"),
        ("MBM_8.bin", 4**8, None, "at most 7"),
        ("MBM.bin", 4**8, 8, "at most 7"),
        ("MBM_0.bin", 1, None, "mantissa_bits"),
        ("MBM_12.bin", 16, None, "mantissa_bits"),
    ],
)
def test_bad_files_are_refused(
    tmp_path: Path, filename: str, size: int, mantissa_bits: int | None, match: str
) -> None:
    path = write_file(tmp_path, filename, bytes(size))
    with pytest.raises(approxsim.MultiplierError, match=match):
        approxsim.Multiplier.from_approxtrain_lut(path, mantissa_bits)


@pytest.mark.parametrize(("m", "stray"), [(4, 0x10), (4, 0x40), (1, 0x02), (6, 0x40)])
def test_stray_bits_are_refused(tmp_path: Path, m: int, stray: int) -> None:
    data = bytearray(approxtrain_bytes(FAMILIES["mitchell"], m))
    data[1] |= stray
    path = write_file(tmp_path, f"MIT_{m}.bin", bytes(data))
    with pytest.raises(approxsim.MultiplierError, match=r"entry \[0, 1\]"):
        approxsim.Multiplier.from_approxtrain_lut(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        approxsim.Multiplier.from_approxtrain_lut(tmp_path / "MBM_7.bin")
