"""Integer C/C++ models: any integer parameter and return types, parameter order, the low
2·bits bits read as two's complement when signed, compile errors, crashes and hangs, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from int_c_sources import TRUNC6_U8, run_standalone, trunc6_reference

from approxsim.multipliers import intc
from approxsim.multipliers.cmodel import (
    CompilerError,
    FunctionNotFoundError,
    WrongSignatureError,
)
from approxsim.multipliers.core import MultiplierError
from approxsim.multipliers.intc import int_from_c
from approxsim.multipliers.sandbox import (
    CModelCrashError,
    CModelExitError,
    CModelTimeoutError,
)

U8 = np.arange(256, dtype=np.int64)
S8 = np.arange(-128, 128, dtype=np.int64)


def test_file_exhaustive_against_standalone_program(tmp_path: Path) -> None:
    src = tmp_path / "trunc.c"
    src.write_text(TRUNC6_U8)
    m = int_from_c(src, "mul8u_TTR6", 8, False)
    assert m.name == "mul8u_TTR6@trunc.c" and m.provenance["builder"] == "c"
    direct = run_standalone(tmp_path, TRUNC6_U8, "mul8u_TTR6", "(long long)mul8u_TTR6(a, b)")
    np.testing.assert_array_equal(m.table.numpy(), direct)
    np.testing.assert_array_equal(m.table.numpy(), trunc6_reference())


@pytest.mark.parametrize(
    ("source", "signed", "want"),
    [
        # EvoApproxLib's newer form: uint64_t, first parameter named B.
        (
            "uint64_t f(const uint64_t B, const uint64_t A) { return B * (A | 1u); }",
            False,
            U8[:, None] * (U8[None, :] | 1),
        ),
        # Signed, typed unsigned: operands arrive as bit patterns, the result is read back
        # as a 16-bit two's complement number.
        (
            "uint16_t f(uint8_t A, uint8_t B) { return (uint16_t)((int8_t)A * (int8_t)B - 1); }",
            True,
            S8[:, None] * S8[None, :] - 1,
        ),
        # Signed types throughout, a wider return than the product.
        ("int32_t f(int8_t a, int8_t b) { return a * b; }", True, S8[:, None] * S8[None, :]),
        # A sign-extended 64-bit return keeps only its low 16 bits.
        ("int64_t f(int a, int b) { return (int64_t)a * b; }", True, S8[:, None] * S8[None, :]),
        # Unsigned operands into int parameters; extra high bits are dropped (mod 2^16).
        (
            "unsigned f(int a, int b) { return (unsigned)(a * b) + 0x10000u * 7u; }",
            False,
            U8[:, None] * U8[None, :],
        ),
    ],
)
def test_integer_types(source: str, signed: bool, want: np.ndarray) -> None:
    m = int_from_c(source, "f", 8, signed, cache_results=False)
    assert m.signed is signed and m.bits == 8
    np.testing.assert_array_equal(m.table.numpy(), want)


def test_parameter_order_decides_rows() -> None:
    m = int_from_c("int f(int y, int x) { return y * (x >> 1); }", "f", 4, False)
    t = m.table.numpy()
    assert t[7, 2] == 7 * 1 and t[2, 7] == 2 * 3
    assert m.m(np.array([7]), np.array([2])).tolist() == [7]


def test_cpp_source(tmp_path: Path) -> None:
    src = tmp_path / "mul.cpp"
    src.write_text(
        "#include <cstdint>\n"
        "namespace hw { template <typename T> T drop(T v) { return v & ~T(1); } }\n"
        "std::uint16_t mulc(std::uint8_t a, std::uint8_t b) { return hw::drop<int>(a) * b; }\n"
    )
    m = int_from_c(src, "mulc", 6, False)
    v = np.arange(64)
    np.testing.assert_array_equal(m.table.numpy(), (v[:, None] & ~1) * v[None, :])
    assert m.provenance["language"] == "c++"


def test_cached_table_is_reused(monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> None:
    src = "int g(int a, int b) { return a * b + 1; }"
    first = int_from_c(src, "g", 5, False)

    def no_compile(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again")

    (entry,) = [p for p in (isolated_cache / intc.INT_CACHE_SECTION).iterdir() if p.is_dir()]
    assert sorted(p.name for p in entry.iterdir()) == ["manifest.json", "table.npy"]
    monkeypatch.setattr(intc, "_compile", no_compile)
    again = int_from_c(src, "g", 5, False)
    assert again.fingerprint == first.fingerprint
    with pytest.raises(AssertionError, match="compiled again"):
        int_from_c(src, "g", 5, True)  # signedness is part of the key


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        ("int other(int a, int b) { return a * b; }", FunctionNotFoundError, "not found"),
        ("int f(int a, int b);", FunctionNotFoundError, "never defined"),
        ("float f(int a, int b) { return a * b; }", WrongSignatureError, "integer result"),
        ("int f(int a) { return a; }", WrongSignatureError, "two integer operands"),
        ("int f(int *a, int b) { return b; }", WrongSignatureError, "int-conversion"),
        ("int f(int a, int b) { return a b; }", CompilerError, "compiling <source text> failed"),
    ],
)
def test_compile_errors(source: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        int_from_c(source, "f", 4, False)


def test_bad_arguments() -> None:
    with pytest.raises(MultiplierError, match="bits"):
        int_from_c("int f(int a, int b) { return a * b; }", "f", 13, False)
    with pytest.raises(MultiplierError, match="signed"):
        int_from_c("int f(int a, int b) { return a * b; }", "f", 4, "yes")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        int_from_c("no_such_model.c", "f", 4, False)


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ("volatile int *p = 0; return *p + a * b;", CModelCrashError, "SIGSEGV"),
        ("volatile int s = 1; while (s) {} return a * b;", CModelTimeoutError, "did not finish"),
        ("if (a == 3) exit(4); return a * b;", CModelExitError, r"exit\(4\)"),
    ],
)
def test_model_failures_are_one_line_errors(
    body: str, error: type[Exception], message: str, isolated_cache: Path
) -> None:
    src = f"#include <stdlib.h>\nint bad(int a, int b) {{ {body} }}\n"
    with pytest.raises(error, match=message) as info:
        int_from_c(src, "bad", 4, False, time_limit=2)
    assert "\n" not in str(info.value) and "the C model bad" in str(info.value)
    assert "the 16x16 grid" in str(info.value)
    entries = list((isolated_cache / intc.INT_CACHE_SECTION).glob("*"))
    assert [p for p in entries if p.is_dir()] == []  # no entry, no build folder left


def test_ten_bits() -> None:
    m = int_from_c("uint32_t h(uint16_t a, uint16_t b) { return a * b; }", "h", 10, False)
    v = np.arange(1024, dtype=np.int64)
    np.testing.assert_array_equal(m.table.numpy(), v[:, None] * v[None, :])
