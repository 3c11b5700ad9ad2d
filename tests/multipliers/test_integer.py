"""The IntMultiplier type: validation, products, error statistics, builders, save and load."""

from __future__ import annotations

import copy
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from approxsim._io import OutputExistsError
from approxsim.errors import ApproxsimError
from approxsim.multipliers import Multiplier, MultiplierError
from approxsim.multipliers.integer import IntMultiplier


def _exact(bits: int, signed: bool) -> np.ndarray:
    lo = -(1 << (bits - 1)) if signed else 0
    v = np.arange(lo, lo + (1 << bits), dtype=np.int64)
    return v[:, None] * v[None, :]


# ---------------------------------------------------------------------- the type


def test_exact_attributes_and_products() -> None:
    m = IntMultiplier.exact(8, True)
    assert (m.name, m.bits, m.signed, m.min_value, m.max_value) == ("int8", 8, True, -128, 127)
    t = m.table
    assert t.dtype == torch.int32 and t.shape == (256, 256)
    a = torch.arange(-128, 128, dtype=torch.int16)
    out = m.m(a[:, None], a[None, :])
    assert out.dtype == torch.int32
    assert torch.equal(out.long(), a[:, None].long() * a[None, :].long())
    u = IntMultiplier.exact(4, False)
    assert (u.name, u.min_value, u.max_value) == ("uint4", 0, 15)


def test_table_row_is_first_operand() -> None:
    # An asymmetric model: the first operand selects the row, the second the column.
    m = IntMultiplier.from_python(lambda a, b: a * b + (a > b).astype(np.int64), 3, False)
    assert int(m.table[5, 2]) == 11 and int(m.table[2, 5]) == 10
    assert int(m.m(torch.tensor(5), torch.tensor(2))) == 11
    s = IntMultiplier.from_python(lambda a, b: a * b + (a > b).astype(np.int64), 3, True)
    assert int(s.table[0, 7]) == -4 * 3  # operands -4 (row 0) and 3 (column 7)
    assert int(s.m(torch.tensor(3), torch.tensor(-4))) == -11


def test_m_broadcasts_and_accepts_every_integer_dtype() -> None:
    m = IntMultiplier.exact(8, False)
    for dtype in (torch.uint8, torch.int16, torch.int32, torch.int64):
        a = torch.tensor([[1], [2], [255]], dtype=dtype)
        b = torch.tensor([3, 4], dtype=dtype)
        assert m.m(a, b).tolist() == [[3, 4], [6, 8], [765, 1020]]
    assert int(m.m(7, 9)) == 63
    assert m.m(torch.zeros(0, 3, dtype=torch.uint8), torch.zeros(3, dtype=torch.uint8)).shape == (
        0,
        3,
    )


@pytest.mark.parametrize(
    "operand",
    [
        torch.tensor([1.0]),
        torch.tensor([1], dtype=torch.float16),
        torch.tensor([True]),
        torch.tensor([1 + 1j]),
        1.5,
    ],
)
def test_m_refuses_non_integer_operands(operand: object) -> None:
    m = IntMultiplier.exact(8, False)
    with pytest.raises(MultiplierError, match="Quantize float tensors first"):
        m.m(operand, torch.tensor([1]))
    with pytest.raises(MultiplierError, match="dtype"):
        m.m(torch.tensor([1]), operand)


def test_m_refuses_values_out_of_range() -> None:
    u = IntMultiplier.exact(8, False)
    with pytest.raises(
        MultiplierError, match=r"holds 256, outside the 8-bit unsigned range 0\.\.255"
    ):
        u.m(torch.tensor([1, 256]), torch.tensor([1]))
    with pytest.raises(MultiplierError, match="holds -1"):
        u.m(torch.tensor([1]), torch.tensor([-1]))
    s = IntMultiplier.exact(8, True)
    with pytest.raises(
        MultiplierError, match=r"holds 128, outside the 8-bit signed range -128\.\.127"
    ):
        s.m(torch.tensor([128]), torch.tensor([1]))
    with pytest.raises(MultiplierError, match="holds 200"):
        s.m(torch.tensor([0]), torch.tensor([200], dtype=torch.uint8))
    with pytest.raises(MultiplierError, match="do not broadcast"):
        s.m(torch.zeros(2, dtype=torch.int8), torch.zeros(3, dtype=torch.int8))


@pytest.mark.parametrize(
    ("bits", "signed", "table", "match"),
    [
        (1, False, np.zeros((2, 2), np.int64), "bits=1 is out of range"),
        (13, False, np.zeros((2, 2), np.int64), "bits=13 is out of range"),
        (True, False, np.zeros((2, 2), np.int64), "bits must be an integer"),
        (2, "yes", np.zeros((4, 4), np.int64), "signed must be True or False"),
        (2, False, np.zeros((4, 3), np.int64), r"shape \(4, 4\)"),
        (2, False, np.zeros((8, 8), np.int64), r"shape \(4, 4\)"),
        (2, False, np.zeros((4, 4), np.float32), "must hold integers"),
        (2, False, np.zeros((4, 4), np.bool_), "must hold integers"),
        (2, False, np.full((4, 4), 16), r"outside the 4-bit unsigned product range 0\.\.15"),
        (2, False, np.full((4, 4), -1), "outside"),
        (2, True, np.full((4, 4), 8), r"signed product range -8\.\.7"),
        (2, True, np.full((4, 4), -9), "entry \\[0, 0\\] \\(operands -2 and -2\\)"),
        (3, False, np.full((8, 8), 2**64 - 1, dtype=np.uint64), "outside"),
    ],
)
def test_constructor_validation(bits: object, signed: object, table: object, match: str) -> None:
    with pytest.raises(MultiplierError, match=match):
        IntMultiplier("t", bits, signed, table)  # type: ignore[arg-type]


def test_constructor_accepts_flat_tables_and_range_edges() -> None:
    m = IntMultiplier("edges", 2, True, np.array([-8, 7] * 8, dtype=np.int8))
    assert m.table.reshape(-1).tolist() == [-8, 7] * 8
    with pytest.raises(MultiplierError, match="non-empty name"):
        IntMultiplier("", 2, True, np.zeros(16, np.int64))
    with pytest.raises(MultiplierError, match="JSON-serializable"):
        IntMultiplier("p", 2, True, np.zeros(16, np.int64), provenance={"x": object()})


def test_immutable_equal_by_fingerprint_and_picklable() -> None:
    a = IntMultiplier.exact(4, True)
    b = IntMultiplier("other-name", 4, True, _exact(4, True))
    assert a == b and hash(a) == hash(b) and a.fingerprint == b.fingerprint
    assert a != IntMultiplier.exact(4, False)  # same products on 0..7, different range
    assert len(a.fingerprint) == 64
    with pytest.raises(AttributeError, match="immutable"):
        a._bits = 5  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del a._table
    t = a.table
    t[0, 0] = 99  # a copy: the multiplier does not change
    assert int(a.table[0, 0]) == 64  # (-8)·(-8)
    assert copy.deepcopy(a) is a
    c = pickle.loads(pickle.dumps(a))
    assert c == a and c.name == a.name and c.provenance == a.provenance
    assert "fingerprint=" in repr(a) and "signed" in repr(a)
    d = a.describe()
    assert d["bits"] == 4 and d["signed"] is True and d["fingerprint"] == a.fingerprint
    assert d["error_stats"]["mae"] == 0.0


# ---------------------------------------------------------------------- error statistics


def test_error_stats_hand_computed_unsigned_2bit() -> None:
    table = _exact(2, False)
    table[3, 3] = 8  # 3·3 = 9: d = -1
    table[1, 1] = 2  # 1·1 = 1: d = +1
    s = IntMultiplier("hand", 2, False, table).error_stats()
    expected = {
        "mae": 2 / 16,
        "mae_percent": 100 * (2 / 16) / 16,
        "wce": 1.0,
        "wce_percent": 100 / 16,
        "ep_percent": 100 * 2 / 16,
        "mse": 2 / 16,
        "mre_percent": 100 * (1 / 9 + 1) / 9,  # 9 pairs with a non-zero exact product
        "wcre_percent": 100.0,
        "mean_error": 0.0,
        "std_error": math.sqrt(2 / 16),
    }
    assert s.keys() == expected.keys()
    for key, value in expected.items():
        assert s[key] == pytest.approx(value, rel=1e-15, abs=1e-15), key


def test_error_stats_hand_computed_signed_2bit() -> None:
    table = _exact(2, True)
    table[0, 0] = -4  # (-2)·(-2) = 4: d = -8
    s = IntMultiplier("hand", 2, True, table).error_stats()
    assert s["mae"] == 0.5 and s["mae_percent"] == 100 * 0.5 / 16
    assert s["wce"] == 8 and s["wce_percent"] == 50.0
    assert s["ep_percent"] == 100 / 16 and s["mse"] == 64 / 16
    assert s["mre_percent"] == pytest.approx(100 * 2 / 9, rel=1e-15)
    assert s["wcre_percent"] == 200.0
    assert s["mean_error"] == -0.5
    assert s["std_error"] == pytest.approx(math.sqrt(4 - 0.25), rel=1e-15)


def _brute_force_stats(table: np.ndarray, bits: int, signed: bool) -> dict[str, float]:
    lo = -(1 << (bits - 1)) if signed else 0
    n = 1 << bits
    ds, rels = [], []
    for i in range(n):
        for j in range(n):
            exact = (lo + i) * (lo + j)
            d = int(table[i][j]) - exact
            ds.append(d)
            if exact != 0:
                rels.append(abs(d) / abs(exact))
    count = len(ds)
    mean = sum(ds) / count
    return {
        "mae": sum(abs(d) for d in ds) / count,
        "mae_percent": 100 * sum(abs(d) for d in ds) / count / 4**bits,
        "wce": float(max(abs(d) for d in ds)),
        "wce_percent": 100 * max(abs(d) for d in ds) / 4**bits,
        "ep_percent": 100 * sum(d != 0 for d in ds) / count,
        "mse": sum(d * d for d in ds) / count,
        "mre_percent": 100 * sum(rels) / len(rels),
        "wcre_percent": 100 * max(rels),
        "mean_error": mean,
        "std_error": math.sqrt(sum((d - mean) ** 2 for d in ds) / count),
    }


@pytest.mark.parametrize(("bits", "signed"), [(3, False), (3, True), (8, False), (8, True)])
def test_error_stats_match_brute_force(bits: int, signed: bool) -> None:
    rng = np.random.default_rng(bits + signed)
    exact = _exact(bits, signed)
    lo, hi = (-(1 << (2 * bits - 1)), (1 << (2 * bits - 1)) - 1) if signed else (0, 4**bits - 1)
    noise = rng.integers(-(1 << bits), 1 << bits, size=exact.shape) * (
        rng.random(exact.shape) < 0.7
    )
    table = np.clip(exact + noise, lo, hi)
    m = IntMultiplier("noisy", bits, signed, table)
    got = m.error_stats()
    want = _brute_force_stats(table.tolist(), bits, signed)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert np.array_equal(m.error_grid(), table - exact)
    assert m.error_stats() is not m.error_stats()  # callers get copies of the cached dict


def test_error_stats_exact_where_int64_would_overflow() -> None:
    # Products off by nearly the largest amount: from 11 bits on, Σd² passes 2^63.
    bits = 11
    exact = _exact(bits, False)
    table = np.where(exact >= 1 << (2 * bits - 1), 0, (1 << (2 * bits)) - 1)
    s = IntMultiplier("far", bits, False, table).error_stats()
    d = table - exact
    # Σd² exactly: d = q·2^bits + r splits each square into parts whose int64 sums fit.
    q, r = d >> bits, d & ((1 << bits) - 1)
    sum_sq = (
        (int((q * q).sum()) << (2 * bits)) + (int((2 * q * r).sum()) << bits) + int((r * r).sum())
    )
    assert sum_sq > 2**63
    assert s["mse"] == sum_sq / d.size
    assert s["wce"] == float((1 << (2 * bits)) - 1)


# ---------------------------------------------------------------------- builders


def test_from_python_vectorized_and_scalar_agree() -> None:
    def vec(a, b):  # type: ignore[no-untyped-def]
        return (a * b) & ~0xF

    def scalar(a: int, b: int) -> int:
        if a == 0 or b == 0:  # an `if` on arrays raises: the builder falls back to scalars
            return 0
        return (a * b) & ~0xF

    mv = IntMultiplier.from_python(vec, 6, False)
    ms = IntMultiplier.from_python(scalar, 6, False)
    assert mv == ms
    assert mv.provenance["called_on"] == "vectorized" and ms.provenance["called_on"] == "scalar"
    assert mv.name == "vec" and mv.provenance["builder"] == "python"
    assert IntMultiplier.from_python(vec, 6, False, vectorized=False) == mv
    with pytest.raises(MultiplierError, match="vectorized=False"):
        IntMultiplier.from_python(scalar, 6, False, vectorized=True)


def test_from_python_keeps_the_low_bits_as_hardware_does() -> None:
    # A signed model returning the raw 8-bit register as an unsigned number (as a C model
    # typed uint16_t would) and one returning it sign-extended build the same table.
    raw = IntMultiplier.from_python(lambda a, b: (a * b) & 0xFF, 4, True)
    ext = IntMultiplier.from_python(lambda a, b: a * b, 4, True)
    assert raw == ext == IntMultiplier.exact(4, True)
    wide = IntMultiplier.from_python(lambda a, b: a * b + (1 << 40), 4, False)
    assert wide == IntMultiplier.exact(4, False)
    big = IntMultiplier.from_python(lambda a, b: int(a) * int(b) + (1 << 100), 3, False)
    assert big == IntMultiplier.exact(3, False)


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda a, b: (a * b).astype(np.float64), "returned dtype float64"),
        (lambda a, b: 1.5 if a else 0, "must return an integer"),
        (lambda a, b: 1 // 0, "raised ZeroDivisionError for operands"),
    ],
)
def test_from_python_errors(fn: object, match: str) -> None:
    with pytest.raises(MultiplierError, match=match):
        IntMultiplier.from_python(fn, 3, False)  # type: ignore[arg-type]
    with pytest.raises(MultiplierError, match="needs a callable"):
        IntMultiplier.from_python(3, 3, False)  # type: ignore[arg-type]


def test_from_lut_arrays_and_tensors() -> None:
    exact = _exact(4, False)
    assert IntMultiplier.from_lut(exact, signed=False) == IntMultiplier.exact(4, False)
    assert IntMultiplier.from_lut(torch.from_numpy(exact.reshape(-1)), signed=False).bits == 4
    # Signed products as raw 8-bit patterns in an unsigned dtype are read as two's complement.
    raw = (_exact(4, True) & 0xFF).astype(np.uint16)
    m = IntMultiplier.from_lut(raw, signed=True)
    assert m == IntMultiplier.exact(4, True) and m.provenance["signed_from_raw"] is True
    with pytest.raises(MultiplierError, match="square"):
        IntMultiplier.from_lut(np.zeros((16, 8), np.int64), signed=False)
    with pytest.raises(MultiplierError, match="square"):
        IntMultiplier.from_lut(np.zeros(15, np.int64), signed=False)
    with pytest.raises(MultiplierError, match="disagrees"):
        IntMultiplier.from_lut(exact, signed=False, bits=5)
    with pytest.raises(MultiplierError, match="does not fit"):
        IntMultiplier.from_lut(np.full((4, 4), 16, np.uint8), signed=True)


def test_from_lut_tfapprox_file(tmp_path: Path) -> None:
    # TFApprox layout: 65,536 little-endian uint16, entry 256·a + b for operands (a, b).
    a = np.arange(256, dtype=np.int64)
    table = a[:, None] * a[None, :] - (a[:, None] > a[None, :])
    table = np.maximum(table, 0)
    path = tmp_path / "mul8u_TEST.bin"
    table.astype("<u2").tofile(path)
    assert path.stat().st_size == 131072
    m = IntMultiplier.from_lut(path, signed=False)
    assert (m.name, m.bits, m.signed) == ("mul8u_TEST", 8, False)
    assert np.array_equal(m.table.numpy(), table)
    assert int(m.m(torch.tensor(200), torch.tensor(3))) == 599  # first operand = row
    assert m.provenance["format"] == "tfapprox-uint16" and len(m.provenance["file_sha256"]) == 64
    # A signed LUT stored as raw 16-bit patterns.
    s = tmp_path / "mul8s_TEST.bin"
    (_exact(8, True) & 0xFFFF).astype("<u2").tofile(s)
    assert IntMultiplier.from_lut(s, signed=True) == IntMultiplier.exact(8, True)
    assert IntMultiplier.from_lut(str(path), signed=False, name="x").name == "x"


def test_from_lut_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        IntMultiplier.from_lut(tmp_path / "missing.bin", signed=False)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\0" * 131071)
    with pytest.raises(MultiplierError, match="2-byte uint16"):
        IntMultiplier.from_lut(odd, signed=False)
    short = tmp_path / "short.bin"
    short.write_bytes(b"\0" * 1000)
    with pytest.raises(MultiplierError, match="131,072 bytes"):
        IntMultiplier.from_lut(short, signed=False)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (2 * 4**9))
    with pytest.raises(MultiplierError, match="bits ≤ 8"):
        IntMultiplier.from_lut(big, signed=False)
    ok = tmp_path / "ok.bin"
    ok.write_bytes(b"\0" * 131072)
    with pytest.raises(MultiplierError, match="disagrees"):
        IntMultiplier.from_lut(ok, signed=False, bits=7)
    npy = tmp_path / "t.npy"
    np.save(npy, _exact(3, True))
    assert IntMultiplier.from_lut(npy, signed=True) == IntMultiplier.exact(3, True)
    npz = tmp_path / "saved.npz"
    npz.write_bytes(b"z")
    with pytest.raises(MultiplierError, match="IntMultiplier.load"):
        IntMultiplier.from_lut(npz, signed=False)


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_from_c_and_from_python_agree_on_operand_order() -> None:
    # The C parameter named `b` comes first, as in EvoApproxLib: order counts, not names.
    src = "#include <stdint.h>\nuint16_t f(uint8_t b, uint8_t a) { return b * a + (b > a); }\n"
    c = IntMultiplier.from_c(src, "f", bits=3, signed=False)
    py = IntMultiplier.from_python(lambda a, b: a * b + (a > b).astype(np.int64), 3, False)
    assert c == py and int(c.table[5, 2]) == 11


# ---------------------------------------------------------------------- save and load


def test_save_load_round_trip(tmp_path: Path) -> None:
    m = IntMultiplier.from_python(lambda a, b: (a * b) | 1, 5, True, name="odd5")
    path = m.save(tmp_path / "odd5.npz")
    back = IntMultiplier.load(path)
    assert back == m and back.name == "odd5" and back.signed and back.bits == 5
    assert back.provenance == m.provenance
    with pytest.raises(OutputExistsError):
        m.save(path, overwrite=False)
    with pytest.raises(OutputExistsError):
        m.save(tmp_path / "in.npz", inputs=[tmp_path / "in.npz"])
    m.save(path)  # overwrite=True by default


def test_load_detects_tampering_and_wrong_kinds(tmp_path: Path) -> None:
    m = IntMultiplier("small", 4, False, np.arange(256).reshape(16, 16) % 100)
    path = m.save(tmp_path / "m.npz")
    with np.load(path) as data:
        table, meta = np.array(data["table"]), np.array(data["meta"])
    table[3, 3] += 1
    np.savez(tmp_path / "tampered.npz", table=table, meta=meta)
    with pytest.raises(MultiplierError, match="does not match its recorded fingerprint"):
        IntMultiplier.load(tmp_path / "tampered.npz")
    np.savez(
        tmp_path / "flipped.npz",
        table=m.table.numpy(),
        meta=np.array(str(meta).replace('"signed": false', '"signed": true')),
    )
    with pytest.raises(MultiplierError, match="fingerprint"):
        IntMultiplier.load(tmp_path / "flipped.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(MultiplierError, match="not a readable"):
        IntMultiplier.load(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        IntMultiplier.load(tmp_path / "none.npz")
    with pytest.raises(MultiplierError, match="IntMultiplier.load"):
        Multiplier.load(path)
    fpath = Multiplier.from_lut(np.ones((4, 4), np.float32)).save(tmp_path / "f.npz")
    with pytest.raises(MultiplierError, match="Multiplier.load"):
        IntMultiplier.load(fpath)


def test_errors_are_approxsim_errors() -> None:
    with pytest.raises(ApproxsimError):
        IntMultiplier.exact(1, False)
    with pytest.raises(ValueError):
        IntMultiplier.exact(8, False).m(torch.tensor([1.0]), torch.tensor([1]))
