"""The integer Triton kernel (approxsim.ops._int_triton) against the reference, on CPU.

``TRITON_INTERPRET=1`` makes triton run its kernels on CPU tensors, so these tests need triton
but no GPU; shapes are tiny (the interpreter is slow). Integer sums are exact: results must
equal :func:`approxsim.ops.reference.int_lut_bmm_ref` bit for bit. As in
``test_triton_interpret.py``, the variable is set before triton is first imported, and the
module skips where a GPU is present (run it alone there with ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    if torch.cuda.is_available():
        pytest.skip(
            "a GPU is present: the compiled kernel is tested there; run this file alone with "
            "TRITON_INTERPRET=1 to test the interpreted one",
            allow_module_level=True,
        )
    if "triton" in sys.modules:
        pytest.skip(
            "triton was imported before TRITON_INTERPRET=1 could be set; run this file in its "
            "own pytest process",
            allow_module_level=True,
        )
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (see the docstring)

pytest.importorskip("triton")

from approxsim.ops._int_triton import triton_int_lut_bmm  # noqa: E402
from approxsim.ops.reference import int_lut_bmm_ref  # noqa: E402


def _table(bits: int, signed: bool, seed: int) -> tuple[torch.Tensor, int]:
    lo = -(1 << (bits - 1)) if signed else 0
    v = torch.arange(1 << bits) + lo
    g = torch.Generator().manual_seed(seed)
    table = (v[:, None] * v[None, :]) ^ torch.randint(0, 4, (1 << bits, 1 << bits), generator=g)
    return table.to(torch.int32), lo


@pytest.mark.parametrize(("bits", "signed"), [(8, False), (8, True), (3, True)])
@pytest.mark.parametrize("shape", [(1, 5, 11, 7), (2, 33, 9, 34)])
def test_triton_equals_reference(bits: int, signed: bool, shape: tuple[int, ...]) -> None:
    table, lo = _table(bits, signed, seed=bits)
    nb, r, k, n = shape
    g = torch.Generator().manual_seed(1)
    dtype = torch.int8 if signed else torch.uint8
    a = torch.randint(lo, lo + (1 << bits), (nb, r, k), generator=g).to(dtype)
    b = torch.randint(lo, lo + (1 << bits), (nb, k, n), generator=g).to(dtype)
    a[0, 0, :] = lo + (1 << bits) - 1  # the extreme operands
    b[0, :, 0] = lo
    for acc in (False, True):
        out = triton_int_lut_bmm(a, b, table, lo, acc)
        ref = int_lut_bmm_ref(a, b, table, lo, acc)
        assert out.dtype == ref.dtype and torch.equal(out, ref)


def test_triton_int64_with_large_entries() -> None:
    g = torch.Generator().manual_seed(2)
    table = torch.randint(-(2**30), 2**30, (4, 4), generator=g, dtype=torch.int32)
    a = torch.randint(0, 4, (1, 3, 21), generator=g)
    b = torch.randint(0, 4, (1, 21, 5), generator=g)
    expect = table.long()[a[:, :, :, None], b[:, None, :, :]].sum(dim=2)
    assert torch.equal(triton_int_lut_bmm(a, b, table, 0, True), expect)


def test_triton_refuses_out_of_range_values() -> None:
    table, lo = _table(4, False, seed=3)
    a = torch.full((1, 2, 3), 16)
    b = torch.zeros(1, 3, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"operand a holds values in \[16, 16\]"):
        triton_int_lut_bmm(a, b, table, lo, False)
