"""recycled() (ops/_scratch.py): large temporaries reuse memory only once nothing refers to it."""

from __future__ import annotations

import pytest
import torch

from approxsim.ops import _scratch

BIG = (3, _scratch.RECYCLE_MIN_BYTES // 4)  # three times the smallest size that is kept


@pytest.fixture(autouse=True)
def _empty_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scratch, "_RECYCLED", [])


def test_reuses_memory_only_when_nothing_refers_to_it() -> None:
    a = _scratch.recycled(BIG)
    assert a.shape == BIG and a.dtype == torch.float32 and a.is_contiguous()
    ptr = a.data_ptr()
    b = _scratch.recycled(BIG)
    assert b.data_ptr() != ptr  # a is alive
    view = a[1:2]
    del a
    c = _scratch.recycled(BIG)
    assert c.data_ptr() not in (ptr, b.data_ptr())  # a view of a keeps its memory busy
    del view
    d = _scratch.recycled(BIG)
    assert d.data_ptr() == ptr  # now free: reused
    saved = torch.randn(BIG, requires_grad=True) * d  # autograd saves d for backward
    del d
    assert _scratch.recycled(BIG).data_ptr() != ptr
    del saved
    e = _scratch.recycled((BIG[0] * BIG[1],))  # same size, another shape
    assert e.data_ptr() == ptr and e.shape == (BIG[0] * BIG[1],)
    assert len(_scratch._RECYCLED) == 4  # a, b, c and the one made while d was saved


def test_small_and_other_dtypes_are_not_mixed_up() -> None:
    small = _scratch.recycled((4, 5))
    assert small.shape == (4, 5) and not _scratch._RECYCLED  # too small to keep
    f = _scratch.recycled(BIG)
    ptr = f.data_ptr()
    del f
    i = _scratch.recycled(BIG, torch.int32)
    assert i.dtype == torch.int32 and i.data_ptr() != ptr


def test_bounded_by_evicting_idle_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    nbytes = BIG[0] * BIG[1] * 4
    monkeypatch.setattr(_scratch, "RECYCLE_MAX_BYTES", 2 * nbytes)
    busy = _scratch.recycled(BIG)
    idle = _scratch.recycled(BIG)
    del idle
    other = _scratch.recycled((BIG[0] + 1, BIG[1]))  # no room: the idle block goes, not the busy
    assert [b.shape[0] for b, _ in _scratch._RECYCLED] == [BIG[0] * BIG[1]]
    assert _scratch._RECYCLED[0][0].data_ptr() == busy.data_ptr()
    assert other.shape == (BIG[0] + 1, BIG[1])
    too_big = _scratch.recycled((3 * BIG[0], BIG[1]))
    assert too_big.numel() == 3 * BIG[0] * BIG[1] and len(_scratch._RECYCLED) == 1


def test_without_reference_counts_nothing_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scratch, "_CAN_RECYCLE", False)  # a torch without the private API
    a = _scratch.recycled(BIG)
    assert a.shape == BIG and not _scratch._RECYCLED


def test_release_kept_memory_drops_idle_blocks_and_buffers() -> None:
    import approxsim.ops

    kept = _scratch.recycled(BIG)
    del kept
    _scratch.buffer("test", 16, torch.float32)
    assert _scratch._RECYCLED and _scratch._BUFFERS
    approxsim.ops.release_kept_memory()
    assert not _scratch._RECYCLED and not _scratch._BUFFERS
