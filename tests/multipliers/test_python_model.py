"""Multiplier.from_python: numpy functional models."""

from __future__ import annotations

import re

import numpy as np
import pytest
from mult_reference import (
    assert_same_bits,
    from_bits,
    normal_bits,
    numpy_mitchell7,
    reference_products,
)

import approxsim


def test_numpy_mitchell_gives_mitchell7() -> None:
    mult = approxsim.Multiplier.from_python(numpy_mitchell7, 7)
    builtin = approxsim.get_multiplier("mitchell7")
    assert mult.fingerprint == builtin.fingerprint
    assert mult.name == "numpy_mitchell7"
    prov = mult.provenance
    assert prov["builder"] == "python"
    assert prov["function"].endswith("numpy_mitchell7")
    assert re.fullmatch(r"[0-9a-f]{64}", prov["source_sha256"])
    assert prov["decomposability"]["mismatches"] == 0
    rng = np.random.default_rng(1)
    a, b = normal_bits(rng, 5000), normal_bits(rng, 5000)
    assert_same_bits(mult(from_bits(a), from_bits(b)), reference_products("mitchell7", a, b))


def test_lambda_and_options() -> None:
    mult = approxsim.Multiplier.from_python(
        lambda a, b: numpy_mitchell7(a, b), 7, name="lam", check_samples=100, seed=5
    )
    assert mult.name == "lam"
    assert mult.provenance["decomposability"]["seed"] == 5
    assert mult.fingerprint == approxsim.get_multiplier("mitchell7").fingerprint


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda a, b: numpy_mitchell7(a, b)[:-1], "shape"),
        (lambda a, b: numpy_mitchell7(a, b).reshape(-1, 1), "shape"),
        (lambda a, b: numpy_mitchell7(a, b).astype(np.float64), "float64"),
        (lambda a, b: (a * b).astype(np.float16), "float16"),
        (lambda a, b: numpy_mitchell7(a, b).tolist(), "returned list;"),
        (lambda a, b: 1.0, "returned float;"),
        (lambda a, b: None, "returned NoneType;"),
    ],
    ids=["short", "2d", "float64", "float16", "list", "scalar", "none"],
)
def test_bad_return_values(fn, match: str) -> None:
    with pytest.raises(approxsim.MultiplierError, match=match):
        approxsim.Multiplier.from_python(fn, 7)


def test_raising_model() -> None:
    def explodes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise ZeroDivisionError("model blew up")

    with pytest.raises(approxsim.MultiplierError, match="ZeroDivisionError: model blew up") as info:
        approxsim.Multiplier.from_python(explodes, 5)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_not_callable() -> None:
    with pytest.raises(approxsim.MultiplierError, match="callable"):
        approxsim.Multiplier.from_python("mitchell7", 7)  # type: ignore[arg-type]


@pytest.mark.parametrize("m", [0, 12, "7"])
def test_mantissa_bits_out_of_range(m) -> None:
    with pytest.raises(approxsim.MultiplierError, match="mantissa_bits"):
        approxsim.Multiplier.from_python(numpy_mitchell7, m)


def test_invalid_lut_values() -> None:
    with pytest.raises(approxsim.MultiplierError, match="positive normal"):
        approxsim.Multiplier.from_python(lambda a, b: -numpy_mitchell7(a, b), 3)
    with pytest.raises(approxsim.MultiplierError, match="positive normal"):
        approxsim.Multiplier.from_python(lambda a, b: np.full_like(a, np.nan), 3)


def _exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * b


def _depends_on_exponent(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = numpy_mitchell7(a, b)
    return np.where(np.abs(a) > 64.0, out * np.float32(1.25), out).astype(np.float32)


def _ignores_sign(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(numpy_mitchell7(a, b))


@pytest.mark.parametrize("fn", [_exact, _depends_on_exponent, _ignores_sign])
def test_not_decomposable(fn) -> None:
    with pytest.raises(approxsim.NotDecomposableError, match="Counter-example") as info:
        approxsim.Multiplier.from_python(fn, 7)
    assert fn.__name__ in str(info.value)
    mult = approxsim.Multiplier.from_python(fn, 7, accept_mismatch=True)
    assert mult.provenance["accepted_mismatch"] is True
    assert 0 < mult.provenance["decomposability"]["mismatch_rate"] < 1


def test_mitchell_model_at_a_narrower_port_is_not_decomposable() -> None:
    """A 7-bit model seen through a 6-bit port loses a bit it depends on."""
    with pytest.raises(approxsim.NotDecomposableError, match="mantissa_bits=6"):
        approxsim.Multiplier.from_python(numpy_mitchell7, 6)
