"""Gradient-table GEMMs of the ``lut`` backward: ``approxsim::lut_grad_bmm`` and its reference.

For codes ``qa: (G, R, K)``, ``qb: (G, K, N)``, weights ``g_a, g_b: (G, R, N)`` and float
gradient tables ``Ga, Gb: (C, C)`` indexed by ``code - qmin``:

* ``grad_a[g, r, k] = Σ_n g_a[g, r, n] · Ga[qa[g, r, k] - qmin, qb[g, k, n] - qmin]``
* ``grad_b[g, k, n] = Σ_r g_b[g, r, n] · Gb[qa[g, r, k] - qmin, qb[g, k, n] - qmin]``

(:mod:`approxsim.nn.quant_ops` builds its ``lut`` gradients from them.) Three pieces:

* :func:`lut_grad_reference` — plain torch, chunked so memory stays bounded; the spec.
* ``approxsim::lut_grad_bmm`` — the op, with a fake kernel for ``torch.compile`` and a CPU
  kernel (:mod:`._lut_grad_cpu`, compiled C++, float32 sums in a fixed order; the reference
  where it cannot be built). It has no autograd: codes have no gradient, and the ``lut``
  backward is differentiated again only with ``create_graph=True``, which takes the reference.
* :func:`lut_grad_bmm` — the entry point: CPU float32 weights take the op (or, for plain eager
  tensors, its CPU kernel directly), anything else the reference.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["lut_grad_bmm", "lut_grad_reference"]

#: Elements of a gathered ``(rows, K, N)`` block materialized at once by the torch loops.
GATHER_CHUNK = 1 << 22


# ---------------------------------------------------------------------------- reference
def lut_grad_reference(
    qa: Tensor,
    qb: Tensor,
    g_a: Tensor | None,
    g_b: Tensor | None,
    ga_table: Tensor,
    gb_table: Tensor,
    qmin: int,
    strategy: Literal["auto", "elements", "rows"] = "auto",
) -> tuple[Tensor | None, Tensor | None]:
    """Gradient-table GEMMs: ``Σ_n g_a[r, n]·Ga[qa[r, k], qb[k, n]]`` and
    ``Σ_r g_b[r, n]·Gb[qa[r, k], qb[k, n]]``, chunked so memory stays bounded.

    Two equivalent strategies: ``"elements"`` gathers every table entry by its own index;
    ``"rows"`` (DESIGN §4's row idea) works one ``k`` at a time on the ``(C, N)`` table
    ``V[a, n] = G[a, qb[k, n]]``: whole-row gathers for the A side, and for the B side sums
    of the gradient rows that share a code, so no per-product gather at all. Building the
    ``K`` small tables pays once there are a few times more rows than codes; ``"auto"``
    picks by a measured cost model. Sums are in the weights' dtype.

    Args:
        qa: ``(G, R, K)`` codes.
        qb: ``(G, K, N)`` codes.
        g_a: ``(G, R, N)`` weights of the A-side sum, or None to skip it.
        g_b: ``(G, R, N)`` weights of the B-side sum, or None to skip it.
        ga_table: ``(C, C)`` float table indexed by ``code - qmin``.
        gb_table: ``(C, C)`` float table.
        qmin: The smallest code.
        strategy: ``"auto"``, ``"elements"`` or ``"rows"``.

    Returns:
        ``(grad_a (G, R, K) | None, grad_b (G, K, N) | None)`` in the weights' dtype
        (float32 without weights).
    """
    groups, rows, k = qa.shape
    c = ga_table.shape[0]
    like = g_a if g_a is not None else g_b
    dtype = torch.float32 if like is None else like.dtype
    out_a = None if g_a is None else torch.zeros(groups, rows, k, device=qa.device, dtype=dtype)
    out_b = (
        None if g_b is None else torch.zeros(groups, k, qb.shape[2], device=qa.device, dtype=dtype)
    )
    ga_table, gb_table = ga_table.to(dtype), gb_table.to(dtype)
    # Cost model measured on CPU: per k the row strategy pays a fixed ~60 µs plus ~0.5 ns per
    # element of (2·C + 3·R)·N; the element gather pays ~5 ns per product (R·N per k).
    n = qb.shape[2]
    rows_first = strategy == "rows" or (strategy == "auto" and 3.5 * rows > c + 6e4 / max(1, n))
    for gi in range(groups):
        a_idx = qa[gi].to(torch.int64) - qmin  # (R, K)
        col = qb[gi].to(torch.int64) - qmin  # (K, N)
        ga_g = None if g_a is None else g_a[gi]
        gb_g = None if g_b is None else g_b[gi]
        oa = None if out_a is None else out_a[gi]
        ob = None if out_b is None else out_b[gi]
        if rows_first:
            _lut_rows(a_idx, col, ga_g, gb_g, ga_table, gb_table, oa, ob)
        else:
            _lut_elements(a_idx, col, ga_g, gb_g, ga_table, gb_table, oa, ob)
    return out_a, out_b


def _lut_elements(
    a_idx: Tensor,
    col: Tensor,
    g_a: Tensor | None,
    g_b: Tensor | None,
    ga_table: Tensor,
    gb_table: Tensor,
    out_a: Tensor | None,
    out_b: Tensor | None,
) -> None:
    """One group of :func:`lut_grad_reference`, one table gather per product."""
    rows, k = a_idx.shape
    c = ga_table.shape[0]
    ga_flat, gb_flat = ga_table.reshape(-1), gb_table.reshape(-1)
    step = max(1, GATHER_CHUNK // max(1, k * col.shape[1]))
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        idx = a_idx[r0:r1].unsqueeze(2) * c + col.unsqueeze(0)  # (rc, K, N)
        if out_a is not None and g_a is not None:
            out_a[r0:r1] = torch.einsum("rkn,rn->rk", ga_flat[idx], g_a[r0:r1])
        if out_b is not None and g_b is not None:
            out_b += torch.einsum("rkn,rn->kn", gb_flat[idx], g_b[r0:r1])


def _lut_rows(
    a_idx: Tensor,
    col: Tensor,
    g_a: Tensor | None,
    g_b: Tensor | None,
    ga_table: Tensor,
    gb_table: Tensor,
    out_a: Tensor | None,
    out_b: Tensor | None,
) -> None:
    """One group of :func:`lut_grad_reference`, one reduction index ``k`` at a time.

    With ``V[a, n] = G[a, qb[k, n]]`` (a ``(C, N)`` table for this ``k``): the A side gathers
    whole rows ``V[qa[r, k], :]`` and dots them with ``g_a[r, :]``; the B side first sums the
    rows of ``g_b`` that share a code (``H[a, n] = Σ_{r: qa[r, k] = a} g_b[r, n]``), then
    ``Σ_a H[a, n]·V[a, n]`` — no per-product gather at all.
    """
    rows, k = a_idx.shape
    c, n = ga_table.shape[0], col.shape[1]
    step = max(1, GATHER_CHUNK // max(1, n))
    a_cols = a_idx.t().contiguous()  # (K, R): each k's codes contiguous
    for kk in range(k):
        codes, cols = a_cols[kk], col[kk]
        if out_a is not None and g_a is not None:
            va = ga_table[:, cols]  # (C, N)
            for r0 in range(0, rows, step):
                r1 = min(rows, r0 + step)
                out_a[r0:r1, kk] = (g_a[r0:r1] * va.index_select(0, codes[r0:r1])).sum(1)
        if out_b is not None and g_b is not None:
            h = torch.zeros(c, n, dtype=g_b.dtype, device=g_b.device)
            h.index_add_(0, codes, g_b)
            out_b[kk] = (h * gb_table[:, cols]).sum(0)


# ---------------------------------------------------------------------------- kernel op
@torch.library.custom_op("approxsim::lut_grad_bmm", mutates_args=())
def _lut_grad_op(
    qa: Tensor,
    qb: Tensor,
    g_a: Tensor | None,
    g_b: Tensor | None,
    ga_table: Tensor,
    gb_table: Tensor,
    qmin: int,
) -> tuple[Tensor, Tensor]:
    """Both gradient-table GEMMs; a skipped side (its weights None) returns an empty
    ``(0,)`` tensor."""
    raise NotImplementedError(f"approxsim::lut_grad_bmm has no kernel for device {qa.device}")


@_lut_grad_op.register_fake
def _(
    qa: Tensor,
    qb: Tensor,
    g_a: Tensor | None,
    g_b: Tensor | None,
    ga_table: Tensor,
    gb_table: Tensor,
    qmin: int,
) -> tuple[Tensor, Tensor]:
    groups, rows, k = qa.shape
    n = qb.shape[2]
    f32 = torch.float32
    # The CPU kernel lays grad_a out (G, K, R) (see _lut_grad_cpu).
    out_a = qa.new_empty((groups, k, rows) if g_a is not None else (0,), dtype=f32)
    out_a = out_a.transpose(1, 2) if g_a is not None else out_a
    out_b = qa.new_empty((groups, k, n) if g_b is not None else (0,), dtype=f32)
    return out_a, out_b


@_lut_grad_op.register_kernel("cpu")
def _(
    qa: Tensor,
    qb: Tensor,
    g_a: Tensor | None,
    g_b: Tensor | None,
    ga_table: Tensor,
    gb_table: Tensor,
    qmin: int,
) -> tuple[Tensor, Tensor]:
    from approxsim.ops._lut_grad_cpu import lut_grad_cpu

    out_a, out_b = lut_grad_cpu(qa, qb, g_a, g_b, ga_table, gb_table, qmin)
    empty = torch.empty(0)
    # float32 whatever the weights' dtype, as the fake kernel says (to() keeps the layout).
    out_a = empty if out_a is None else out_a.to(torch.float32)
    return out_a, (empty.clone() if out_b is None else out_b.to(torch.float32))


# ---------------------------------------------------------------------------- entry point
def lut_grad_bmm(
    qa: Tensor,
    qb: Tensor,
    g_a: Tensor | None,
    g_b: Tensor | None,
    ga_table: Tensor,
    gb_table: Tensor,
    qmin: int,
) -> tuple[Tensor | None, Tensor | None]:
    """The gradient-table GEMMs (module docstring), by the fastest implementation at hand.

    CPU float32 weights and tables run the compiled kernel (float32 sums, each output element
    summed by one thread in a fixed order: the same bits on any thread count); other
    devices and dtypes, weights that need a gradient themselves (a backward with
    ``create_graph=True``), and a CPU without a usable C++ compiler (one warning), run
    :func:`lut_grad_reference`.

    Args:
        qa: ``(G, R, K)`` integer codes (the tables' row operand).
        qb: ``(G, K, N)`` integer codes.
        g_a: ``(G, R, N)`` weights of the A-side sum, or None to skip it.
        g_b: ``(G, R, N)`` weights of the B-side sum, or None to skip it.
        ga_table: ``(C, C)`` float table indexed by ``code - qmin``.
        gb_table: ``(C, C)`` float table.
        qmin: The smallest code.

    Returns:
        ``(grad_a (G, R, K) | None, grad_b (G, K, N) | None)``; the kernel's ``grad_a`` is the
        transpose of a contiguous ``(G, K, R)`` tensor, and it reads codes ``qa`` laid out
        that way without a copy.

    Raises:
        ValueError: a code outside ``[qmin, qmin + C)`` (compiled kernel).
        KernelBuildError: the kernel cannot be built and ``APPROXSIM_CPU_KERNEL=native``.
    """
    tensors = [t for t in (g_a, g_b, ga_table, gb_table) if t is not None]
    differentiable = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if (
        qa.device.type != "cpu"
        or any(t.dtype != torch.float32 for t in tensors)
        # A backward taken with create_graph=True: the op has no autograd, the reference does.
        or differentiable
    ):
        return lut_grad_reference(qa, qb, g_a, g_b, ga_table, gb_table, qmin)
    if (
        all(type(t) is Tensor for t in (qa, qb, *tensors))
        and not torch.compiler.is_compiling()
        and torch._C._len_torch_dispatch_stack() == 0
        and torch._C._functorch.peek_interpreter_stack() is None
    ):
        # Plain eager tensors: the kernel without the custom-op dispatch (tens of µs a call).
        from approxsim.ops._lut_grad_cpu import lut_grad_cpu

        return lut_grad_cpu(qa, qb, g_a, g_b, ga_table, gb_table, qmin)
    out_a, out_b = _lut_grad_op(qa, qb, g_a, g_b, ga_table, gb_table, qmin)
    return (out_a if g_a is not None else None), (out_b if g_b is not None else None)
