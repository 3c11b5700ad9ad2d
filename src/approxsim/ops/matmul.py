"""Approximate matmul and elementwise product as ``torch.library`` custom ops, with autograd.

Two layers of ops:

* ``approxsim::lut_bmm(a, b, lut, mantissa_bits, rounding)`` — the kernel op: batched
  ``(B, R, K) × (B, K, N)`` float32 with every product through the LUT. One kernel per device
  (CPU: :mod:`._cpu`; CUDA: :mod:`._triton`), a fake (meta) kernel, no autograd.
* ``approxsim::approx_bmm(a, b, lut_f, lut_gi, lut_gw, bits, rounding)`` — the differentiable
  op. ``bits``/``rounding`` hold (forward, grad-input, grad-weight) settings; ``bits[i] == 0``
  means exact float32 for that pass. Its backward runs approximate GEMMs with the operand
  order of ApproxTrain: forward ``(a, b)``, input gradient ``(grad, bᵀ)``, weight gradient
  ``(aᵀ, grad)`` — the first operand of each product is always the LUT's row operand.

The public entry point is :func:`matmul`, which broadcasts like ``torch.matmul``. For plain
CPU tensors in eager mode it runs the same kernels and the same backward through an
``autograd.Function`` instead of dispatching through the ops (whose Python dispatch costs
about a hundred microseconds per call); under ``torch.compile``, export, fake tensors and
dispatch modes, and on GPUs, the ops run. Inside ``torch.func`` transforms, which custom-op
autograd does not support, an ``autograd.Function`` with ``setup_context`` and a generated
vmap rule runs the same kernels and backward.

The approximate op is differentiable once (its backward GEMMs have no derivative): a second
derivative raises :data:`DOUBLE_BACKWARD_ERROR` rather than silently missing terms, and
forward mode raises :data:`FORWARD_MODE_ERROR`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from approxsim.multipliers import Multiplier, MultiplierError, MultiplierLike, get_multiplier
from approxsim.multipliers.numformat import ROUNDINGS
from approxsim.ops._vmap import vmap_bmm, vmap_operands
from approxsim.ops.intmatmul import IntMultiplierLike, int_matmul, is_int_multiplier
from approxsim.ops.reference import lut_mul_ref

__all__ = [
    "matmul",
    "mul",
    "PassMultipliers",
    "resolve_passes",
    "DOUBLE_BACKWARD_ERROR",
    "FORWARD_MODE_ERROR",
]


# ---------------------------------------------------------------------------- kernel op
@torch.library.custom_op("approxsim::lut_bmm", mutates_args=())
def lut_bmm(a: Tensor, b: Tensor, lut: Tensor, mantissa_bits: int, rounding: int) -> Tensor:
    """Batched LUT matmul ``(B, R, K) × (B, K, N) → (B, R, N)`` (float32, no autograd)."""
    raise NotImplementedError(f"approxsim::lut_bmm has no kernel for device {a.device}")


@lut_bmm.register_fake
def _(a: Tensor, b: Tensor, lut: Tensor, mantissa_bits: int, rounding: int) -> Tensor:
    return a.new_empty((a.shape[0], a.shape[1], b.shape[2]))


@lut_bmm.register_kernel("cpu")
def _(a: Tensor, b: Tensor, lut: Tensor, mantissa_bits: int, rounding: int) -> Tensor:
    from approxsim.ops._cpu import lut_bmm_cpu

    return lut_bmm_cpu(a, b, lut, mantissa_bits, rounding)


@lut_bmm.register_kernel("cuda")
def _(a: Tensor, b: Tensor, lut: Tensor, mantissa_bits: int, rounding: int) -> Tensor:
    from approxsim.ops._triton import triton_lut_bmm

    return triton_lut_bmm(a.contiguous(), b.contiguous(), lut, mantissa_bits, rounding)


@torch.library.custom_op("approxsim::lut_mul", mutates_args=())
def lut_mul(a: Tensor, b: Tensor, lut: Tensor, mantissa_bits: int, rounding: int) -> Tensor:
    """Elementwise LUT product of same-shape float32 tensors (no autograd)."""
    return lut_mul_ref(a, b, lut, mantissa_bits, rounding)


@lut_mul.register_fake
def _(a: Tensor, b: Tensor, lut: Tensor, mantissa_bits: int, rounding: int) -> Tensor:
    return torch.empty_like(a)


@lut_mul.register_kernel("cuda")
def _(a: Tensor, b: Tensor, lut: Tensor, mantissa_bits: int, rounding: int) -> Tensor:
    from approxsim.ops._triton import triton_lut_mul

    flat = triton_lut_mul(
        a.contiguous().view(-1), b.contiguous().view(-1), lut, mantissa_bits, rounding
    )
    return flat.view(a.shape)


# ---------------------------------------------------------------------------- autograd op
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _eager_cpu(a: Tensor, b: Tensor, *more: Tensor) -> bool:
    """True when ``a`` and ``b`` are plain CPU tensors outside any tracing: no
    ``torch.compile``, no dispatch mode (fake tensors, export), no ``torch.func`` transform.
    Then the kernels may be called without dispatching through the custom ops, whose Python
    dispatch costs about a hundred microseconds per call (felt by small layers)."""
    return (
        type(a) in _PLAIN
        and type(b) in _PLAIN
        and a.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and torch._C._len_torch_dispatch_stack() == 0
        and not _in_functorch(a, b, *more)
    )


def _in_functorch(*tensors: Tensor) -> bool:
    """Inside a ``torch.func`` transform, or holding its wrapped tensors (the backward of a
    ``vjp`` runs after the transform returned, on tensors it saved wrapped)."""
    f = torch._C._functorch
    return f.peek_interpreter_stack() is not None or any(
        f.is_functorch_wrapped_tensor(t) for t in tensors
    )


def _bmm_pass(
    a: Tensor, b: Tensor, lut: Tensor, bits: int, rounding: int, like: Tensor | None = None
) -> Tensor:
    """One pass's product. ``like``: the operand a gradient is for; when it is column-major
    (a transposed view, such as a convolution's patches) the compiled CPU kernel writes the
    result in that layout, so no transposing copy is needed downstream."""
    if bits == 0:
        return torch.bmm(a, b)
    if a.device.type != "cpu":
        a, b = a.contiguous(), b.contiguous()
    # The CPU kernel reads any strides: the transposed operands of the backward pass are
    # not copied.
    if _eager_cpu(a, b, lut):
        from approxsim.ops._cpu import lut_bmm_cpu

        column_major = like is not None and like.stride(1) == 1 and like.stride(2) != 1
        return lut_bmm_cpu(a, b, lut, bits, rounding, column_major)
    return lut_bmm(a, b, lut, bits, rounding)


@torch.library.custom_op("approxsim::approx_bmm", mutates_args=())
def approx_bmm(
    a: Tensor,
    b: Tensor,
    lut_f: Tensor,
    lut_gi: Tensor,
    lut_gw: Tensor,
    bits: Sequence[int],
    rounding: Sequence[int],
) -> Tensor:
    """Differentiable batched approximate matmul (see the module docstring)."""
    return _bmm_pass(a, b, lut_f, bits[0], rounding[0])


@approx_bmm.register_fake
def _(a, b, lut_f, lut_gi, lut_gw, bits, rounding):  # type: ignore[no-untyped-def]
    return a.new_empty((a.shape[0], a.shape[1], b.shape[2]))


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    a, b, lut_f, lut_gi, lut_gw, bits, rounding = inputs
    ctx.save_for_backward(a, b, lut_gi, lut_gw)
    ctx.bits = tuple(bits)
    ctx.rounding = tuple(rounding)


def _backward_pass(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
    a, b, lut_gi, lut_gw = ctx.saved_tensors
    grad_a = grad_b = None
    grad = grad.contiguous()
    if ctx.needs_input_grad[0]:
        # Input gradient: operand A = grad, operand B = bᵀ (ApproxTrain's (grad, w) order).
        grad_a = _bmm_pass(grad, b.transpose(1, 2), lut_gi, ctx.bits[1], ctx.rounding[1], a)
    if ctx.needs_input_grad[1]:
        # Weight gradient: operand A = aᵀ, operand B = grad (ApproxTrain's (x, grad) order).
        grad_b = _bmm_pass(a.transpose(1, 2), grad, lut_gw, ctx.bits[2], ctx.rounding[2], b)
    return grad_a, grad_b


#: The error of differentiating a gradient of an approximate product.
DOUBLE_BACKWARD_ERROR = (
    "approxsim.matmul is differentiable once: the approximate GEMMs of its backward pass have "
    "no derivative of their own, so a second derivative through it (double backward after "
    "create_graph=True: gradient penalties, Hessians, torch.func.grad of torch.func.grad) "
    "would silently miss its terms. Compute such terms with exact layers (multiplier 'fp32') "
    "or without differentiating the gradient"
)


class _Differentiated(torch.autograd.Function):
    """``_Differentiated.apply(n, *grads, *sources)``: the first ``n`` tensors unchanged, as
    functions of all of them; differentiating them raises :data:`DOUBLE_BACKWARD_ERROR`. What
    ``once_differentiable`` does, with a message that names approxsim, in the form torch.func
    transforms accept, and connected to the tensors the gradients really depend on."""

    generate_vmap_rule = True

    @staticmethod
    def forward(n: int, *tensors: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        return tuple(t.clone() for t in tensors[:n])

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> Any:
        raise RuntimeError(DOUBLE_BACKWARD_ERROR)

    @staticmethod
    def jvp(ctx: Any, *tangents: Tensor) -> Any:
        raise RuntimeError(DOUBLE_BACKWARD_ERROR)


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    """The approximate backward GEMMs, differentiable once.

    With ``create_graph=True`` the gradients depend on ``grad``, ``a`` and ``b`` through
    approximate products that have no derivative: rather than hand back gradients that
    silently lack that dependence (a second-order term of zero), they are marked so that
    differentiating them raises.
    """
    with torch.no_grad():
        grad_a, grad_b = _backward_pass(ctx, grad)
    sources = [t for t in (grad, *ctx.saved_tensors[:2]) if t.requires_grad]
    if torch.is_grad_enabled() and sources:
        present = [g for g in (grad_a, grad_b) if g is not None]
        marked = iter(_Differentiated.apply(len(present), *present, *sources))
        grad_a = None if grad_a is None else next(marked)
        grad_b = None if grad_b is None else next(marked)
    return grad_a, grad_b, None, None, None, None, None


approx_bmm.register_autograd(_backward, setup_context=_setup_context)


class _EagerApproxBmm(torch.autograd.Function):
    """``approxsim::approx_bmm`` without the custom-op dispatch, for plain CPU tensors in
    eager mode (see :func:`_eager_cpu`): the same kernels, the same backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        a: Tensor,
        b: Tensor,
        lut_f: Tensor,
        lut_gi: Tensor,
        lut_gw: Tensor,
        bits: Sequence[int],
        rounding: Sequence[int],
    ) -> Tensor:
        _setup_context(ctx, (a, b, lut_f, lut_gi, lut_gw, bits, rounding), None)  # type: ignore[arg-type]
        return _bmm_pass(a, b, lut_f, bits[0], rounding[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        return _backward(ctx, grad)

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        raise RuntimeError(FORWARD_MODE_ERROR)


#: Why forward-mode differentiation of an approximate product is refused.
FORWARD_MODE_ERROR = (
    "approxsim.matmul has no forward-mode derivative (torch.func.jvp, jacfwd, hessian, "
    "torch.autograd.forward_ad); use reverse mode: torch.func.grad, grad_and_value, vjp or "
    "jacrev"
)


class _FuncApproxBmm(torch.autograd.Function):
    """``approxsim::approx_bmm`` for ``torch.func`` transforms, which torch's custom-op
    autograd does not support: the same kernels and backward, in the form (``setup_context``,
    a generated vmap rule over :func:`lut_bmm`'s batching rule) the transforms accept."""

    generate_vmap_rule = True

    @staticmethod
    def forward(  # type: ignore[override]
        a: Tensor,
        b: Tensor,
        lut_f: Tensor,
        lut_gi: Tensor,
        lut_gw: Tensor,
        bits: Sequence[int],
        rounding: Sequence[int],
    ) -> Tensor:
        return _bmm_pass(a, b, lut_f, bits[0], rounding[0])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        _setup_context(ctx, inputs, output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        return _backward(ctx, grad)

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        raise RuntimeError(FORWARD_MODE_ERROR)


@torch.library.register_vmap("approxsim::lut_bmm")
def _lut_bmm_vmap(
    info: Any,
    in_dims: tuple[int | None, ...],
    a: Tensor,
    b: Tensor,
    lut: Tensor,
    mantissa_bits: int,
    rounding: int,
) -> tuple[Tensor, int]:
    """Batching rule: the vmapped dimension joins the op's own batch dimension."""
    a, b = vmap_operands(info, in_dims, a, b)
    return vmap_bmm(lambda x, y: lut_bmm(x, y, lut, mantissa_bits, rounding), a, b)


@torch.library.register_vmap("approxsim::lut_mul")
def _lut_mul_vmap(
    info: Any,
    in_dims: tuple[int | None, ...],
    a: Tensor,
    b: Tensor,
    lut: Tensor,
    mantissa_bits: int,
    rounding: int,
) -> tuple[Tensor, int]:
    """Batching rule of the elementwise product: both operands get the vmapped dimension."""
    a, b = vmap_operands(info, in_dims, a, b)
    return lut_mul(a.contiguous(), b.contiguous(), lut, mantissa_bits, rounding), 0


# ---------------------------------------------------------------------------- public API
class PassMultipliers:
    """The multipliers of the three passes of an approximate matmul.

    Args:
        forward: Multiplier (or name) of the forward product.
        grad_input: Multiplier of the input-gradient GEMM; default: ``forward``.
            ``"fp32"`` makes that pass exact.
        grad_weight: Multiplier of the weight-gradient GEMM; default: ``forward``.
    """

    __slots__ = ("forward", "grad_input", "grad_weight")

    def __init__(
        self,
        forward: Multiplier | str,
        grad_input: Multiplier | str | None = None,
        grad_weight: Multiplier | str | None = None,
    ) -> None:
        self.forward = _as_multiplier(forward, "multiplier")
        self.grad_input = (
            self.forward if grad_input is None else _as_multiplier(grad_input, "grad_input")
        )
        self.grad_weight = (
            self.forward if grad_weight is None else _as_multiplier(grad_weight, "grad_weight")
        )

    def __copy__(self) -> PassMultipliers:
        return self  # holds immutable multipliers only

    def __deepcopy__(self, memo: dict[int, Any]) -> PassMultipliers:
        return self

    def __setattr__(self, key: str, value: Any) -> None:
        if hasattr(self, key):
            raise AttributeError("PassMultipliers is immutable; build a new one")
        object.__setattr__(self, key, value)

    @property
    def all_exact(self) -> bool:
        """True when every pass is exact float32."""
        return self.forward.is_exact and self.grad_input.is_exact and self.grad_weight.is_exact

    def names(self) -> dict[str, str]:
        """Names of the three passes' multipliers."""
        return {
            "forward": self.forward.name,
            "grad_input": self.grad_input.name,
            "grad_weight": self.grad_weight.name,
        }

    def __repr__(self) -> str:
        n = self.names()
        if n["forward"] == n["grad_input"] == n["grad_weight"]:
            return n["forward"]
        return (
            f"forward={n['forward']}, grad_input={n['grad_input']}, grad_weight={n['grad_weight']}"
        )


def _as_multiplier(m: Any, what: str) -> Multiplier:
    if isinstance(m, Multiplier):
        return m
    if isinstance(m, str):
        return get_multiplier(m)
    if is_int_multiplier(m):
        raise MultiplierError(
            f"{what}: the integer multiplier {getattr(m, 'name', '')!r} takes integer operands "
            "and has no per-pass form; call approxsim.matmul(a, b, int_multiplier) with integer "
            "tensors, without grad_input/grad_weight"
        )
    raise MultiplierError(
        f"{what} must be an approxsim.Multiplier or a multiplier name, got {type(m).__name__}"
    )


def resolve_passes(
    multiplier: MultiplierLike | PassMultipliers,
    grad_input: MultiplierLike | None = None,
    grad_weight: MultiplierLike | None = None,
) -> PassMultipliers:
    """Normalize the ways a user can name multipliers into a :class:`PassMultipliers`."""
    if isinstance(multiplier, PassMultipliers):
        if grad_input is not None or grad_weight is not None:
            return PassMultipliers(
                multiplier.forward,
                grad_input if grad_input is not None else multiplier.grad_input,
                grad_weight if grad_weight is not None else multiplier.grad_weight,
            )
        return multiplier
    return PassMultipliers(multiplier, grad_input, grad_weight)


def _lut_args(m: Multiplier, device: torch.device) -> tuple[Tensor, int, int]:
    if m.is_exact:
        return torch.empty(0, dtype=torch.int32, device=device), 0, 0
    return m.lut_bits(device), m.mantissa_bits, ROUNDINGS.index(m.rounding)


_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_operand(x: Any, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"approxsim.matmul: {what} must be a Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"approxsim.matmul: {what} has dtype {x.dtype}; approximate products need float32 "
            "(float16, bfloat16 and float64 are converted to float32)"
        )
    return x


def matmul(
    a: Tensor,
    b: Tensor,
    multiplier: Multiplier | str | PassMultipliers | IntMultiplierLike,
    *,
    grad_input: Multiplier | str | None = None,
    grad_weight: Multiplier | str | None = None,
) -> Tensor:
    """Matrix product with every scalar product through a simulated multiplier.

    Broadcasts like :func:`torch.matmul`: ``(…, R, K) × (…, K, N) → (…, R, N)``, 1-D operands
    included. Each product is bit-identical to ``multiplier(a[r, k], b[k, n])``; sums are
    float32. float16/bfloat16/float64 operands are converted to float32 for the arithmetic and
    the result is returned in the operands' promoted dtype. The exact multiplier ``fp32`` runs
    native ``torch.matmul``; every other multiplier is simulated, whatever the shape or device.

    With an integer multiplier (``approxsim.IntMultiplier``) the operands are integer tensors
    of operand values and the result is their exact integer sum of table products, int32 or
    int64 (see :func:`approxsim.ops.intmatmul.int_matmul`); there is no gradient.

    Autograd: the gradients are approximate GEMMs too (ApproxTrain's order): the input
    gradient multiplies ``(grad, bᵀ)`` with ``grad_input`` and the weight gradient
    ``(aᵀ, grad)`` with ``grad_weight``; both default to ``multiplier``; ``"fp32"`` makes a
    pass exact.

    Args:
        a: Operand A (the LUT's row operand), ``(…, R, K)`` or ``(K,)``.
        b: Operand B, ``(…, K, N)`` or ``(K,)``.
        multiplier: A :class:`~approxsim.Multiplier`, a multiplier name, a
            :class:`PassMultipliers`, or an integer multiplier.
        grad_input: Multiplier of the input-gradient pass.
        grad_weight: Multiplier of the weight-gradient pass.

    Returns:
        The product, shaped like ``torch.matmul(a, b)``.

    Raises:
        TypeError: non-tensor or non-floating operands (integer ones with an integer
            multiplier).
        ValueError: integer operand values outside an integer multiplier's range.
        RuntimeError: shapes that cannot be multiplied, or operands on different devices.
        MultiplierError: a bad multiplier argument.
    """
    if is_int_multiplier(multiplier) and grad_input is None and grad_weight is None:
        return int_matmul(a, b, multiplier)  # type: ignore[arg-type]
    passes = resolve_passes(multiplier, grad_input, grad_weight)  # type: ignore[arg-type]
    a = _check_operand(a, "a")
    b = _check_operand(b, "b")
    if a.device != b.device:
        raise RuntimeError(
            f"approxsim.matmul: operands are on different devices ({a.device} and {b.device})"
        )
    if a.dim() == 0 or b.dim() == 0:
        raise RuntimeError("approxsim.matmul: both arguments need at least 1 dimension")
    out_dtype = torch.promote_types(a.dtype, b.dtype)
    if passes.all_exact:
        return torch.matmul(a, b)
    squeeze_r = a.dim() == 1
    squeeze_n = b.dim() == 1
    a2 = a.unsqueeze(0) if squeeze_r else a
    b2 = b.unsqueeze(-1) if squeeze_n else b
    if a2.shape[-1] != b2.shape[-2]:
        raise RuntimeError(
            f"approxsim.matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be "
            f"multiplied ({a2.shape[-2]}x{a2.shape[-1]} and {b2.shape[-2]}x{b2.shape[-1]})"
        )
    a2 = a2.float()
    b2 = b2.float()
    r, k, n = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    if b2.dim() == 2:
        # A shared right operand (a Linear weight): fold A's batch dims into its rows.
        batch = a2.shape[:-2]
        rows = a2.shape[:-1].numel()
        out = _bmm(a2.reshape(1, rows, k), b2.unsqueeze(0), passes).reshape(*batch, r, n)
    else:
        batch = a2.shape[:-2]
        if batch != b2.shape[:-2]:
            batch = torch.broadcast_shapes(batch, b2.shape[:-2])
        nb = batch.numel()
        ae = a2.expand(*batch, r, k).reshape(nb, r, k)
        be = b2.expand(*batch, k, n).reshape(nb, k, n)
        out = _bmm(ae, be, passes).reshape(*batch, r, n)
    if squeeze_r:
        out = out.squeeze(-2)
    if squeeze_n:
        out = out.squeeze(-1)
    return out.to(out_dtype)


def _bmm(a: Tensor, b: Tensor, passes: PassMultipliers) -> Tensor:
    dev = a.device
    lf, bf, rf = _lut_args(passes.forward, dev)
    lgi, bgi, rgi = _lut_args(passes.grad_input, dev)
    lgw, bgw, rgw = _lut_args(passes.grad_weight, dev)
    if _eager_cpu(a, b):
        return _EagerApproxBmm.apply(a, b, lf, lgi, lgw, (bf, bgi, bgw), (rf, rgi, rgw))
    if not torch.compiler.is_compiling() and _in_functorch(a, b):
        # Inside a torch.func transform (grad, vjp, vmap, jacrev): custom-op autograd does
        # not support them, an autograd.Function with setup_context does.
        return _FuncApproxBmm.apply(a, b, lf, lgi, lgw, (bf, bgi, bgw), (rf, rgi, rgw))
    return approx_bmm(a, b, lf, lgi, lgw, [bf, bgi, bgw], [rf, rgi, rgw])


def mul(a: Tensor, b: Tensor, multiplier: Multiplier | str | IntMultiplierLike) -> Tensor:
    """Elementwise simulated product (broadcasting), float32; not differentiable.

    ``multiplier(a, b)`` does the same; this form runs the device kernel (Triton on CUDA).
    With an integer multiplier it is ``multiplier.m(a, b)``: the integer products of integer
    operand values.
    """
    if is_int_multiplier(multiplier):
        return multiplier.m(a, b)  # type: ignore[union-attr]
    m = _as_multiplier(multiplier, "multiplier")
    a = _check_operand(a, "a").float()
    b = _check_operand(b, "b").float()
    if m.is_exact:
        return a * b
    a, b = torch.broadcast_tensors(a, b)
    lut, bits, rnd = _lut_args(m, a.device)
    return lut_mul(a.contiguous(), b.contiguous(), lut, bits, rnd)
