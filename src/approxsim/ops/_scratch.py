"""Memory the CPU kernels keep between calls: per-thread scratch buffers and recycled blocks.

Fresh pages are expensive on CPU: the first touch of each page faults, and for the kernels'
working space and a convolution's patch matrix that can cost more than the arithmetic done in
it. Two mechanisms keep memory instead of returning it to the system:

* :func:`buffer` — a flat scratch buffer per calling thread and name, reused on every call
  (the kernels' decoded operands and V tables; never visible to callers);
* :func:`recycled` — an ordinary tensor for the caller, whose storage may be that of an
  earlier one nobody refers to any more (large temporaries such as patch matrices).

:func:`release_kept_memory` drops both (what is in use stays alive with its users).
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

__all__ = [
    "RECYCLE_MAX_BYTES",
    "RECYCLE_MIN_BYTES",
    "buffer",
    "recycled",
    "release_kept_memory",
]

_BUFFERS: dict[tuple[int, str], Tensor] = {}
#: Buffers larger than this are not kept between calls.
_KEEP_BUFFER_BYTES = 1 << 28


def buffer(name: str, numel: int, dtype: torch.dtype) -> Tensor:
    """A reusable flat buffer of ``numel`` elements, one per calling thread and ``name``.

    Args:
        name: What the buffer is for (distinct names never share memory).
        numel: Elements needed.
        dtype: Element type.

    Returns:
        An uninitialised 1-D tensor of ``numel`` elements (a view of the kept buffer).
    """
    key = (threading.get_ident(), name)
    buf = _BUFFERS.get(key)
    if buf is None or buf.numel() < numel or buf.dtype != dtype:
        buf = torch.empty(numel, dtype=dtype)
        if buf.element_size() * numel <= _KEEP_BUFFER_BYTES:
            _BUFFERS[key] = buf
    return buf[:numel]


#: Tensors from :func:`recycled` at least this large are kept for reuse...
RECYCLE_MIN_BYTES = 4 << 20
#: ... up to this many bytes in all (idle ones are dropped, oldest first, to make room).
RECYCLE_MAX_BYTES = 2 << 30
#: ``(base, storage references when idle)`` of every kept tensor, oldest first.
_RECYCLED: list[tuple[Tensor, int]] = []
_RECYCLE_LOCK = threading.Lock()
#: Whether this torch can count a storage's references (a private API): without it nothing
#: is recycled.
_CAN_RECYCLE = hasattr(torch._C, "_storage_Use_Count")


def _storage_refs(t: Tensor) -> int:
    """References to ``t``'s storage: one per tensor or view over it, plus the temporary
    storage object this call makes (which is why an idle count is recorded, not assumed)."""
    return int(torch._C._storage_Use_Count(t.untyped_storage()._cdata))


def recycled(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
    """An uninitialised contiguous tensor like ``torch.empty(shape)``, whose memory may be
    that of an earlier one nothing refers to any more.

    For large temporaries allocated again and again, such as a convolution's patch matrix
    in training (kept by autograd until the backward pass, then dropped) and its gradient:
    the allocator returns such blocks to the system, and touching fresh pages costs more
    than writing them (about 23 ms of page faults for ResNet-18 layer1's 75 MB at batch 32).
    A kept block is handed out again only when no tensor or view (an autograd graph's saved
    tensors included) refers to its storage any more, so reuse is invisible to callers.

    Args:
        shape: Shape of the tensor.
        dtype: Element type.

    Returns:
        A contiguous CPU tensor of ``shape`` and ``dtype`` with undefined contents.
    """
    numel = 1
    for d in shape:
        numel *= d
    nbytes = numel * dtype.itemsize
    if not _CAN_RECYCLE or nbytes < RECYCLE_MIN_BYTES or nbytes > RECYCLE_MAX_BYTES:
        return torch.empty(shape, dtype=dtype)
    with _RECYCLE_LOCK:
        for base, idle in _RECYCLED:
            if base.numel() == numel and base.dtype == dtype and _storage_refs(base) == idle:
                return base.view(shape)
        held = sum(b.numel() * b.element_size() for b, _ in _RECYCLED)
        i = 0
        while held + nbytes > RECYCLE_MAX_BYTES and i < len(_RECYCLED):
            base, idle = _RECYCLED[i]
            if _storage_refs(base) == idle:
                del _RECYCLED[i]
                held -= base.numel() * base.element_size()
            else:
                i += 1
        base = torch.empty(numel, dtype=dtype)
        if held + nbytes <= RECYCLE_MAX_BYTES:
            _RECYCLED.append((base, _storage_refs(base)))
        return base.view(shape)


def release_kept_memory() -> None:
    """Drop the scratch buffers and recycled blocks kept between calls.

    What is still in use stays alive with its users; call it, for example, before measuring
    how much memory one call needs.
    """
    with _RECYCLE_LOCK:
        _RECYCLED.clear()
    _BUFFERS.clear()
