"""recycled(): large temporaries reuse memory only once nothing refers to it."""

from __future__ import annotations

import pytest
import torch

from approxsim.ops import _cpu

BIG = (3, _cpu.RECYCLE_MIN_BYTES // 4)  # three times the smallest size that is kept


@pytest.fixture(autouse=True)
def _empty_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cpu, "_RECYCLED", [])


def test_reuses_memory_only_when_nothing_refers_to_it() -> None:
    a = _cpu.recycled(BIG)
    assert a.shape == BIG and a.dtype == torch.float32 and a.is_contiguous()
    ptr = a.data_ptr()
    b = _cpu.recycled(BIG)
    assert b.data_ptr() != ptr  # a is alive
    view = a[1:2]
    del a
    c = _cpu.recycled(BIG)
    assert c.data_ptr() not in (ptr, b.data_ptr())  # a view of a keeps its memory busy
    del view
    d = _cpu.recycled(BIG)
    assert d.data_ptr() == ptr  # now free: reused
    saved = torch.randn(BIG, requires_grad=True) * d  # autograd saves d for backward
    del d
    assert _cpu.recycled(BIG).data_ptr() != ptr
    del saved
    e = _cpu.recycled((BIG[0] * BIG[1],))  # same size, another shape
    assert e.data_ptr() == ptr and e.shape == (BIG[0] * BIG[1],)
    assert len(_cpu._RECYCLED) == 4  # a, b, c and the one made while d was saved


def test_small_and_other_dtypes_are_not_mixed_up() -> None:
    small = _cpu.recycled((4, 5))
    assert small.shape == (4, 5) and not _cpu._RECYCLED  # too small to keep
    f = _cpu.recycled(BIG)
    ptr = f.data_ptr()
    del f
    i = _cpu.recycled(BIG, torch.int32)
    assert i.dtype == torch.int32 and i.data_ptr() != ptr


def test_bounded_by_evicting_idle_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    nbytes = BIG[0] * BIG[1] * 4
    monkeypatch.setattr(_cpu, "RECYCLE_MAX_BYTES", 2 * nbytes)
    busy = _cpu.recycled(BIG)
    idle = _cpu.recycled(BIG)
    del idle
    other = _cpu.recycled((BIG[0] + 1, BIG[1]))  # no room: the idle block goes, not the busy
    assert [b.shape[0] for b, _ in _cpu._RECYCLED] == [BIG[0] * BIG[1]]
    assert _cpu._RECYCLED[0][0].data_ptr() == busy.data_ptr()
    assert other.shape == (BIG[0] + 1, BIG[1])
    too_big = _cpu.recycled((3 * BIG[0], BIG[1]))
    assert too_big.numel() == 3 * BIG[0] * BIG[1] and len(_cpu._RECYCLED) == 1


def test_without_reference_counts_nothing_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cpu, "_CAN_RECYCLE", False)  # a torch without the private API
    a = _cpu.recycled(BIG)
    assert a.shape == BIG and not _cpu._RECYCLED
