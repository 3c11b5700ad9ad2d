"""EvoApproxLib files: bits and signedness from the name, header metrics checked against the
table, parameter order, signed models typed unsigned, refused and slipped headers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from int_c_sources import (
    ASYM_U8,
    EXACT_U8,
    SIGNED_BODY,
    SIGNED_HEADER,
    SIGNED_S8,
    TRUNC6_BODY,
    TRUNC6_HEADER,
    TRUNC6_U8,
    run_standalone,
    trunc6_reference,
)

from approxsim.multipliers.evoapprox import (
    EvoApproxError,
    EvoApproxHeaderError,
    EvoApproxHeaderWarning,
    HeaderMetric,
    compare_metric,
    find_function,
    from_evoapprox,
    parse_header,
)
from approxsim.multipliers.integer import IntMultiplier


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _load(path: Path) -> IntMultiplier:
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvoApproxHeaderWarning)
        return from_evoapprox(path)


@pytest.fixture(scope="module")
def trunc6(module_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> IntMultiplier:
    folder = tmp_path_factory.mktemp("trunc6")
    return _load(_write(folder, "mul8u_TTR6.c", TRUNC6_U8))


def test_exhaustive_against_the_c_model(trunc6: IntMultiplier, tmp_path: Path) -> None:
    table = trunc6.table.numpy()
    direct = run_standalone(tmp_path, TRUNC6_U8, "mul8u_TTR6", "(long long)mul8u_TTR6(a, b)")
    np.testing.assert_array_equal(table, direct)
    np.testing.assert_array_equal(table, trunc6_reference())


def test_reading_and_provenance(trunc6: IntMultiplier) -> None:
    m = trunc6
    assert (m.name, m.bits, m.signed) == ("mul8u_TTR6", 8, False)
    evo = m.provenance["evoapprox"]
    assert evo["signature"] == "uint16_t mul8u_TTR6(uint8_t a, uint8_t b)"
    assert {k: v["status"] for k, v in evo["metrics"].items()} == dict.fromkeys(
        ["MAE%", "MAE", "WCE%", "WCE", "WCRE%", "EP%", "MRE%", "MSE"], "match"
    )
    assert evo["circuit"]["PDK45_PWR"] == {"value": 0.301, "printed": "0.301", "unit": "mW"}
    assert evo["circuit"]["PDK45_AREA"]["unit"] == "um2"
    stats = m.error_stats()
    assert stats["wce"] == 321 and stats["mae"] == 80.25 and stats["mse"] == 9158.25


def test_exact_file_with_b_a_order(tmp_path: Path) -> None:
    m = _load(_write(tmp_path, "mul8u_TEXA.c", EXACT_U8))
    v = np.arange(256)
    np.testing.assert_array_equal(m.table.numpy(), v[:, None] * v[None, :])
    assert m.error_stats()["ep_percent"] == 0.0


def test_parameter_order_not_names(tmp_path: Path) -> None:
    m = _load(_write(tmp_path, "mul8u_TASY.c", ASYM_U8))
    table = m.table.numpy()
    v = np.arange(256)
    # Row = the first parameter (named B), used whole; column = A, its low bits dropped.
    np.testing.assert_array_equal(table, v[:, None] * (v[None, :] & 0xFC))
    assert table[3, 255] == 3 * 252 and table[255, 3] == 0
    direct = run_standalone(tmp_path, ASYM_U8, "mul8u_TASY", "(long long)mul8u_TASY(a, b)")
    np.testing.assert_array_equal(table, direct)
    assert not np.array_equal(table, table.T)


def test_signed_model_typed_unsigned(tmp_path: Path) -> None:
    m = _load(_write(tmp_path, "mul8s_TSGN.c", SIGNED_S8))
    assert m.signed and m.min_value == -128
    v = np.arange(-128, 128)
    want = (v[:, None] * v[None, :]) & ~15
    np.testing.assert_array_equal(m.table.numpy(), want)
    call = "(long long)(int16_t)mul8s_TSGN((uint8_t)a, (uint8_t)b)"
    np.testing.assert_array_equal(
        m.table.numpy(), run_standalone(tmp_path, SIGNED_S8, "mul8s_TSGN", call)
    )
    assert m.table.numpy()[0, 0] == 16384  # -128 * -128, read as two's complement


def test_unsigned_reading_of_a_signed_result_is_refused(tmp_path: Path) -> None:
    # The signed circuit filed under an unsigned name: its header cannot match.
    text = SIGNED_HEADER + SIGNED_BODY.format(name="mul8u_TSGN")
    with pytest.raises(EvoApproxHeaderError, match=r"MAE% = 0\.0099 printed, 49\.6094 computed"):
        from_evoapprox(_write(tmp_path, "mul8u_TSGN.c", text))


def test_wrong_header_is_refused_naming_the_metric(tmp_path: Path) -> None:
    header = TRUNC6_HEADER.replace("MAE% = 0.1225", "MAE% = 0.1325")
    path = _write(tmp_path, "mul8u_TTR6.c", header + TRUNC6_BODY)
    with pytest.raises(EvoApproxHeaderError) as info:
        from_evoapprox(path)
    msg = str(info.value)
    assert "MAE% = 0.1325 printed, 0.122452 computed" in msg
    assert "MSE" not in msg and "check_header=False" in msg
    # Loading anyway records the mismatch.
    m = from_evoapprox(path, check_header=False)
    assert m.provenance["evoapprox"]["metrics"]["MAE%"]["status"] == "mismatch"


def test_header_slip_loads_with_a_warning(tmp_path: Path) -> None:
    header = TRUNC6_HEADER.replace("MAE = 80.25", "MAE = 80.26")
    path = _write(tmp_path, "mul8u_TTR6.c", header + TRUNC6_BODY)
    with pytest.warns(EvoApproxHeaderWarning, match=r"MAE = 80\.26 but the table gives 80\.25"):
        m = from_evoapprox(path)
    assert m.provenance["evoapprox"]["metrics"]["MAE"]["status"] == "slip"


def test_file_without_header_warns(tmp_path: Path) -> None:
    with pytest.warns(EvoApproxHeaderWarning, match="no error metrics"):
        m = from_evoapprox(_write(tmp_path, "mul8u_TTR6.c", TRUNC6_BODY))
    assert m.provenance["evoapprox"]["metrics"] == {}


def test_compare_metric_units() -> None:
    printed = HeaderMetric("MAE%", "0.0018", "%")
    assert printed.digit == pytest.approx(1e-4)
    assert compare_metric(printed, 0.00185)[0] == "match"  # half a unit: still a match
    assert compare_metric(printed, 0.0019)[0] == "slip"
    assert compare_metric(printed, 0.0020)[0] == "slip"
    assert compare_metric(printed, 0.00206)[0] == "mismatch"
    assert HeaderMetric("MSE", "34405.106e3", "").digit == 1.0
    assert compare_metric(HeaderMetric("WCE", "0", ""), 0.0) == ("match", 0.0)


def test_parse_header_and_function() -> None:
    header = parse_header(TRUNC6_U8)
    assert header["WCRE%"] == HeaderMetric("WCRE%", "100.00", "%")
    assert header["PDK45_DELAY"].value == 1.33
    fn = find_function(EXACT_U8)
    assert (fn.name, fn.bits, fn.signed) == ("mul8u_TEXA", 8, False)
    assert fn.parameter_types == ("uint64_t", "uint64_t")
    assert fn.signature == "uint64_t mul8u_TEXA(const uint64_t B, const uint64_t A)"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("int f(int a, int b) { return a * b; }", "no EvoApproxLib multiplier function"),
        ("uint64_t mul16u_X(uint64_t a, uint64_t b) { return a * b; }", "16-bit operands"),
        ("uint32_t mul12u_X(uint8_t a, uint8_t b) { return a * b; }", "too narrow"),
        (
            "int mul4u_A(int a, int b) { return a * b; }\nint mul4u_B(int a, int b) { return 0; }",
            "several",
        ),
    ],
)
def test_files_that_cannot_be_read(source: str, message: str) -> None:
    with pytest.raises(EvoApproxError, match=message):
        find_function(source)


def test_small_width_from_name(tmp_path: Path) -> None:
    src = "// MAE = 0\n// EP% = 0.00 %\nint mul4s_T(int a, int b) { return a * b; }\n"
    m = _load(_write(tmp_path, "mul4s_T.c", src))
    assert (m.bits, m.signed, m.min_value, m.max_value) == (4, True, -8, 7)
    v = np.arange(-8, 8)
    np.testing.assert_array_equal(m.table.numpy(), v[:, None] * v[None, :])
