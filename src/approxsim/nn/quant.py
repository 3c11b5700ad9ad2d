"""Quantization for integer approximate multipliers: the config, observers and the quantized GEMM.

A quantized layer maps its float operands to integer codes, runs every code × code product
through an :class:`~approxsim.multipliers.integer.IntMultiplier`'s table, sums the products
exactly in integers and scales the sum back to float. This module holds the pieces every
quantized layer shares:

* :class:`QuantConfig` — the user's choices (bits, granularity, calibration, mapping, gradient);
* :class:`QuantScheme` — those choices resolved against one multiplier (code range, the table
  the codes go through, its gradient tables);
* :class:`RangeObserver` — the running activation range (calibration, EMA during training);
* :func:`quantized_matmul` — ``(G, R, K) × (G, K, N)`` with its autograd (``ste`` or ``lut``).

The layers themselves live in :mod:`approxsim.nn.quant_layers`; ``docs/quantization.md``
states the arithmetic and the gradient semantics precisely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from approxsim.errors import ApproxsimError
from approxsim.multipliers import get_int_multiplier
from approxsim.multipliers.integer import MAX_INT_BITS, IntMultiplier

__all__ = [
    "QuantConfig",
    "QuantError",
    "QuantScheme",
    "RangeObserver",
    "check_int_multiplier",
    "lut_gradient_tables",
    "weight_range",
]

Mapping = Literal["auto", "affine", "sign-magnitude", "symmetric"]


class QuantError(ApproxsimError, ValueError):
    """A quantization setting or a quantized layer's state that cannot be used as asked."""


@dataclass(frozen=True)
class QuantConfig:
    """How a layer's float operands become integer codes for an integer multiplier.

    All fields are validated on construction; the config is checked against a multiplier
    when a layer is built (:meth:`resolve`).
    """

    bits: int | None = None
    """Code width. ``None``: the multiplier's operand width. Must not exceed it (a narrower
    code uses the corner of the table its values reach)."""

    weight_granularity: Literal["per-channel", "per-tensor"] = "per-channel"
    """Weight scales (and zero points) per output channel or one for the whole tensor.
    Activations are always quantized per tensor."""

    calibration: Literal["minmax", "percentile"] = "minmax"
    """How an activation range is taken from a batch: its minimum and maximum, or the
    ``percentile``-th and ``(100 - percentile)``-th percentiles (clipping outliers). Weights
    always use their minimum and maximum."""

    percentile: float = 99.99
    """The upper percentile of the ``"percentile"`` calibration, in (50, 100]."""

    momentum: float = 0.1
    """Weight of a new batch in the exponential moving average of the activation range while
    training: ``range ← (1 - momentum)·range + momentum·batch_range``. In (0, 1]."""

    mapping: Mapping = "auto"
    """How signed values meet the table. ``"affine"`` (unsigned multipliers): asymmetric codes
    with zero points; only the code × code product goes through the table, the zero-point
    terms are exact (as TFApprox). ``"sign-magnitude"`` (unsigned multipliers): magnitudes
    through the table, the sign applied after (as TorchApprox). ``"symmetric"`` (signed
    multipliers): symmetric codes straight into the table. ``"auto"``: affine for unsigned
    multipliers, symmetric for signed ones."""

    grad: Literal["ste", "lut"] = "ste"
    """Backward pass. ``"ste"``: exact float GEMMs of the dequantized operands (straight-through
    estimator). ``"lut"``: difference-based gradient tables of the approximate product,
    applied per product."""

    lut_step: int = 1
    """Half-width ``h`` of the ``"lut"`` gradient tables' difference stencil, in codes:
    ``Ga[a, b] = (f(a+h, b) - f(a-h, b)) / 2h`` (the stencil cut at the ends of the code
    range). 1 is the plain central difference; a wider stencil averages the slope over the
    steps of designs whose product is a step function of each operand (DRUM, truncation),
    where the 1-code difference is 0 at most codes and many times the exact derivative at the
    steps (docs/results-int8.md measures it). Ignored with ``"ste"``."""

    def __post_init__(self) -> None:
        if self.bits is not None and (
            isinstance(self.bits, bool) or not isinstance(self.bits, int) or self.bits < 2
        ):
            raise QuantError(f"QuantConfig.bits must be None or an int ≥ 2, got {self.bits!r}")
        _check_choice("weight_granularity", self.weight_granularity, ("per-channel", "per-tensor"))
        _check_choice("calibration", self.calibration, ("minmax", "percentile"))
        _check_choice("mapping", self.mapping, ("auto", "affine", "sign-magnitude", "symmetric"))
        _check_choice("grad", self.grad, ("ste", "lut"))
        if (
            isinstance(self.lut_step, bool)
            or not isinstance(self.lut_step, int)
            or self.lut_step < 1
        ):
            raise QuantError(f"QuantConfig.lut_step must be an int ≥ 1, got {self.lut_step!r}")
        if not isinstance(self.percentile, (int, float)) or not 50.0 < self.percentile <= 100.0:
            raise QuantError(
                f"QuantConfig.percentile must be a number in (50, 100], got {self.percentile!r}"
            )
        if not isinstance(self.momentum, (int, float)) or not 0.0 < self.momentum <= 1.0:
            raise QuantError(
                f"QuantConfig.momentum must be a number in (0, 1], got {self.momentum!r}"
            )

    def resolve(self, multiplier: Any) -> QuantScheme:
        """Check this config against ``multiplier`` and fix the code range and tables.

        Args:
            multiplier: The :class:`~approxsim.multipliers.integer.IntMultiplier` the codes
                go through.

        Returns:
            The resolved :class:`QuantScheme`.

        Raises:
            QuantError: ``multiplier`` is not an IntMultiplier, ``bits`` exceeds its width,
                or ``mapping`` does not fit its signedness.
        """
        return QuantScheme.build(self, multiplier)


def _check_choice(field: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise QuantError(f"QuantConfig.{field} must be one of {listed}, got {value!r}")


def check_int_multiplier(multiplier: Any, where: str) -> IntMultiplier:
    """The IntMultiplier that ``multiplier`` is or names, else a QuantError saying why.

    Args:
        multiplier: An :class:`~approxsim.multipliers.integer.IntMultiplier` or the name of a
            built-in or registered one (``"drum4_u8"``).
        where: The function or layer named in the message.

    Returns:
        The multiplier.

    Raises:
        QuantError: anything else (a float Multiplier included).
        UnknownMultiplierError: a name that is not an integer multiplier's.
    """
    if isinstance(multiplier, IntMultiplier):
        return multiplier
    if isinstance(multiplier, str):
        return get_int_multiplier(multiplier)
    raise QuantError(
        f"{where} needs an approxsim IntMultiplier (or its name) for quantized layers, got "
        f"{type(multiplier).__name__} {multiplier!r}; float multipliers are simulated without "
        "quantization: drop quant= to use one, or pass an IntMultiplier"
    )


# ---------------------------------------------------------------------------- resolved scheme
@dataclass(frozen=True)
class QuantScheme:
    """A :class:`QuantConfig` resolved against one multiplier (immutable, shared by layers).

    Attributes:
        config: The user's config.
        multiplier: The user's multiplier.
        kind: ``"affine"``, ``"sign-magnitude"`` or ``"symmetric"``.
        bits: Code width.
        qmin: The smallest code.
        qmax: The largest code.
        table_multiplier: The multiplier the codes go through: ``multiplier`` itself, or for
            sign-magnitude a signed multiplier one bit wider whose products are
            ``sign(a)·sign(b)·T[|a|, |b|]`` (its unused most negative row and column are 0).
    """

    config: QuantConfig
    multiplier: IntMultiplier
    kind: str
    bits: int
    qmin: int
    qmax: int
    table_multiplier: IntMultiplier

    @staticmethod
    def build(config: QuantConfig, multiplier: Any) -> QuantScheme:
        """Resolve ``config`` against ``multiplier`` (see :meth:`QuantConfig.resolve`).

        Args:
            config: The quantization config.
            multiplier: An IntMultiplier.

        Returns:
            The scheme.

        Raises:
            QuantError: see :meth:`QuantConfig.resolve`.
        """
        mult = check_int_multiplier(multiplier, "QuantConfig.resolve")
        bits = mult.bits if config.bits is None else config.bits
        if bits > mult.bits:
            raise QuantError(
                f"QuantConfig(bits={bits}) asks for {bits}-bit codes but the multiplier "
                f"{mult.name!r} takes {mult.bits}-bit operands; use bits ≤ {mult.bits} or a "
                "wider multiplier"
            )
        kind = config.mapping
        if kind == "auto":
            kind = "symmetric" if mult.signed else "affine"
        if mult.signed and kind != "symmetric":
            raise QuantError(
                f"mapping={kind!r} is for unsigned multipliers, but {mult.name!r} is signed: "
                "signed multipliers take symmetric codes (use mapping='auto' or 'symmetric')"
            )
        if not mult.signed and kind == "symmetric":
            raise QuantError(
                f"mapping='symmetric' needs a signed multiplier, but {mult.name!r} is unsigned; "
                "use mapping='affine' (zero points) or 'sign-magnitude'"
            )
        if kind == "affine":
            qmin, qmax, table_mult = 0, (1 << bits) - 1, mult
        elif kind == "symmetric":
            qmin, qmax, table_mult = -((1 << (bits - 1)) - 1), (1 << (bits - 1)) - 1, mult
        else:
            if bits + 1 > MAX_INT_BITS:
                raise QuantError(
                    f"sign-magnitude codes of {bits} magnitude bits need a {bits + 1}-bit signed "
                    f"table, over the {MAX_INT_BITS}-bit limit; use bits ≤ {MAX_INT_BITS - 1}"
                )
            qmin, qmax, table_mult = (
                -((1 << bits) - 1),
                (1 << bits) - 1,
                _sign_magnitude(mult, bits),
            )
        return QuantScheme(config, mult, kind, bits, qmin, qmax, table_mult)

    def qparams(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """Scale and zero point for values in ``[lo, hi]`` (elementwise, any shape).

        Affine: ``[min(lo, 0), max(hi, 0)]`` spans the codes, zero point rounded (real 0 is a
        code exactly). Symmetric and sign-magnitude: ``max(|lo|, |hi|)`` maps to ``qmax``,
        zero point 0. An empty range gets scale 1.

        Args:
            lo: Lower end(s) of the range, float.
            hi: Upper end(s), same shape.

        Returns:
            ``(scale float32, zero_point int64)``, shaped like ``lo``.
        """
        lo = lo.detach().float()
        hi = hi.detach().float()
        if self.kind == "affine":
            lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
            scale = (hi - lo) / float(self.qmax - self.qmin)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            zp = torch.clamp(torch.round(self.qmin - lo / scale), self.qmin, self.qmax)
            return scale, zp.to(torch.int64)
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = amax / float(self.qmax)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale, torch.zeros(scale.shape, dtype=torch.int64, device=scale.device)

    def quantize(
        self, x: Tensor, scale: Tensor, zp: Tensor, need_mask: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Codes of ``x``: ``clamp(round(x / scale) + zp, qmin, qmax)`` (round half to even).

        Args:
            x: Float values.
            scale: Scale(s), broadcastable to ``x``.
            zp: Zero point(s), broadcastable to ``x``.
            need_mask: Also return where ``x`` was inside the code range (for the backward).

        Returns:
            ``(codes int16, inside)``: ``inside`` (bool, or None without ``need_mask``) is
            True where ``x`` was not clipped.

        Raises:
            QuantError: ``x`` holds NaN or infinity.
        """
        q = x.float() / scale
        if torch.compiler.is_compiling():
            # A compiled graph cannot branch on data: the check becomes an assertion in it
            # (a RuntimeError with the same message).
            torch._assert_async(torch.isfinite(x).all(), _NONFINITE)
        # One reduction finds NaN and infinity; a sum that overflowed (or a quotient that did,
        # which the clamp handles) is rechecked on the operand itself.
        elif not bool(torch.isfinite(q.sum())) and not bool(torch.isfinite(x).all()):
            raise QuantError(_NONFINITE)
        q.round_().add_(zp)
        inside = ((q >= self.qmin) & (q <= self.qmax)) if need_mask else None
        # int16 holds every code (|code| < 2^12) and halves the traffic of im2col and the GEMM.
        return q.clamp_(self.qmin, self.qmax).to(torch.int16), inside

    def describe(self) -> str:
        """A short text: multiplier name, fingerprint prefix, scheme and bits."""
        m = self.multiplier
        return (
            f"int_multiplier={m.name}@{m.fingerprint[:12]}, {self.kind} {self.bits}-bit, "
            f"grad={self.config.grad}"
            + (f", lut_step={self.config.lut_step}" if self.config.lut_step != 1 else "")
        )


_NONFINITE = (
    "a quantized layer got a NaN or infinite value; integer codes cannot represent it (check "
    "the model's inputs and learning rate)"
)

# Derived tables, keyed by fingerprints (multipliers are immutable); cleared when they grow
# past a few entries, since a 12-bit table is 64 MiB.
_CACHE_LIMIT = 8
_DERIVED: dict[tuple[str, int], IntMultiplier] = {}
_GRAD_TABLES: dict[tuple[str, int, int, int, str], tuple[Tensor, Tensor]] = {}


def _sign_magnitude(mult: IntMultiplier, bits: int) -> IntMultiplier:
    """The signed ``bits + 1``-bit table ``sign(a)·sign(b)·T[|a|, |b|]`` (sign(0) = +1)."""
    key = (mult.fingerprint, bits)
    if key not in _DERIVED:
        if len(_DERIVED) >= _CACHE_LIMIT:
            _DERIVED.clear()
        n = 1 << bits  # magnitudes 0 .. n-1
        t = mult.table.to(torch.int64)[:n, :n]
        vals = torch.arange(-n, n)
        mag = vals.abs().clamp(max=n - 1)
        sign = torch.where(vals < 0, -1, 1)
        full = sign[:, None] * sign[None, :] * t[mag[:, None], mag[None, :]]
        full[0, :] = 0  # operand -n is never a code (magnitudes stop at n - 1)
        full[:, 0] = 0
        _DERIVED[key] = IntMultiplier(
            f"{mult.name}+sign",
            bits + 1,
            True,
            full,
            provenance={
                "builder": "sign-magnitude",
                "base": mult.name,
                "base_fingerprint": mult.fingerprint,
                "magnitude_bits": bits,
            },
        )
    return _DERIVED[key]


def lut_gradient_tables(scheme: QuantScheme, device: torch.device) -> tuple[Tensor, Tensor]:
    """Difference-based gradient tables of the code × code product over the code range.

    With ``f(a, b)`` the product the layer computes for codes ``a`` (row operand) and ``b``,
    and ``h = scheme.config.lut_step``, ``Ga[a, b] = (f(a+h, b) - f(a-h, b)) / 2h`` and
    ``Gb[a, b] = (f(a, b+h) - f(a, b-h)) / 2h``, the stencil cut at ``qmin`` and ``qmax``
    (``(f(hi, b) - f(lo, b)) / (hi - lo)`` with ``lo = max(a-h, qmin)``, ``hi = min(a+h,
    qmax)``; one-sided at the ends when ``h = 1``). For an exact table they are ``b`` and
    ``a`` (away from the ends for the other operand's axis, exactly everywhere for this one).

    Args:
        scheme: The resolved scheme (its ``table_multiplier``, code range and ``lut_step``).
        device: Where the tables are wanted.

    Returns:
        ``(Ga, Gb)``, float32 ``(C, C)`` with ``C = qmax - qmin + 1``, indexed by
        ``code - qmin``.
    """
    tm = scheme.table_multiplier
    step = scheme.config.lut_step
    if torch.compiler.is_compiling():
        # A traced backward may not write the cache; the tables (2^(2·bits) entries) are
        # then part of the graph, computed from the multiplier's table.
        return _grad_tables(scheme, device)
    key = (tm.fingerprint, scheme.qmin, scheme.qmax, step, str(device))
    if key not in _GRAD_TABLES:
        if len(_GRAD_TABLES) >= _CACHE_LIMIT:
            _GRAD_TABLES.clear()
        _GRAD_TABLES[key] = _grad_tables(scheme, device)
    return _GRAD_TABLES[key]


def _grad_tables(scheme: QuantScheme, device: torch.device) -> tuple[Tensor, Tensor]:
    tm = scheme.table_multiplier
    lo = scheme.qmin - tm.min_value
    hi = scheme.qmax - tm.min_value + 1
    f = tm.table.to(torch.float64)[lo:hi, lo:hi]
    step = scheme.config.lut_step
    return (
        _difference(f, 0, step).float().to(device),
        _difference(f, 1, step).float().to(device),
    )


def _difference(f: Tensor, dim: int, step: int) -> Tensor:
    """``(f[i+step] - f[i-step]) / (2·step)`` along ``dim``, the stencil cut at both ends."""
    n = f.shape[dim]
    if n == 1:
        return torch.zeros_like(f)
    i = torch.arange(n, device=f.device)
    up, down = (i + step).clamp(max=n - 1), (i - step).clamp(min=0)
    width = (up - down).to(f.dtype)
    shape = [1] * f.ndim
    shape[dim] = n
    return (f.index_select(dim, up) - f.index_select(dim, down)) / width.view(shape)


# ---------------------------------------------------------------------------- observers
_EMPTY, _RUNNING, _FROZEN = 0, 1, 2


class RangeObserver(nn.Module):
    """The running range of one activation tensor (per tensor), kept as buffers.

    Buffers (in the ``state_dict`` under the observer's name): ``lo`` and ``hi`` (the range)
    and ``state`` (0: nothing observed, 1: observed and still following the data while
    training, 2: frozen). A ``state_dict`` without them (a float checkpoint) loads and leaves
    the observer empty.

    Args:
        config: The layer's :class:`QuantConfig` (calibration, percentile, momentum).
        device: Where the buffers live.
    """

    def __init__(self, config: QuantConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("lo", torch.zeros((), device=device))
        self.register_buffer("hi", torch.zeros((), device=device))
        self.register_buffer("state", torch.zeros((), dtype=torch.int64, device=device))
        self.calibrating = False
        self._count = 0

    lo: Tensor
    hi: Tensor
    state: Tensor

    @property
    def observed(self) -> bool:
        """True once a range has been observed, calibrated or loaded."""
        return int(self.state) != _EMPTY

    @property
    def frozen(self) -> bool:
        """True when the range no longer follows the data (after calibration)."""
        return int(self.state) == _FROZEN

    def batch_range(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The range of one batch under the configured calibration.

        Args:
            x: The activation tensor.

        Returns:
            ``(lo, hi)`` float32 scalars.
        """
        flat = x.detach().float().reshape(-1)
        if flat.numel() == 0:
            raise QuantError("a quantized layer got an empty activation tensor to observe")
        if self.config.calibration == "minmax" or self.config.percentile == 100.0:
            return flat.min(), flat.max()
        n = flat.numel()
        k_hi = max(1, min(n, math.ceil(self.config.percentile / 100.0 * n)))
        k_lo = max(1, n + 1 - k_hi)
        return flat.kthvalue(k_lo).values, flat.kthvalue(k_hi).values

    def observe(self, x: Tensor) -> None:
        """Fold one batch into the range (calibration, or the EMA while training).

        During calibration ``minmax`` keeps the overall minimum and maximum and
        ``percentile`` averages the per-batch percentiles; otherwise the first batch sets the
        range and later ones move it by ``momentum``. A frozen observer is left alone.

        Args:
            x: The activation tensor.
        """
        if self.frozen and not self.calibrating:
            return
        lo, hi = self.batch_range(x)
        with torch.no_grad():
            if self.calibrating:
                if self._count == 0:
                    self.lo.copy_(lo)
                    self.hi.copy_(hi)
                elif self.config.calibration == "minmax":
                    self.lo.copy_(torch.minimum(self.lo, lo))
                    self.hi.copy_(torch.maximum(self.hi, hi))
                else:  # running mean of the per-batch percentiles
                    self.lo.add_((lo - self.lo) / (self._count + 1))
                    self.hi.add_((hi - self.hi) / (self._count + 1))
                self._count += 1
            elif int(self.state) == _EMPTY:
                self.lo.copy_(lo)
                self.hi.copy_(hi)
                self.state.fill_(_RUNNING)
            else:
                m = self.config.momentum
                self.lo.mul_(1 - m).add_(lo, alpha=m)
                self.hi.mul_(1 - m).add_(hi, alpha=m)

    def begin_calibration(self) -> None:
        """Start collecting a fresh range (any previous one is replaced)."""
        self.calibrating = True
        self._count = 0

    def end_calibration(self, freeze: bool) -> int:
        """Stop collecting; freeze the range or let training keep following it.

        Args:
            freeze: Freeze the range (post-training quantization); else an EMA continues in
                training mode.

        Returns:
            The number of batches this observer saw.
        """
        self.calibrating = False
        if self._count:
            self.state.fill_(_FROZEN if freeze else _RUNNING)
        return self._count

    def range(self, what: str) -> tuple[Tensor, Tensor]:
        """The current range, refusing an empty observer.

        Args:
            what: The layer and operand named in the error.

        Returns:
            ``(lo, hi)``.

        Raises:
            QuantError: nothing was observed yet.
        """
        if not self.observed:
            raise QuantError(
                f"{what} has no activation range yet: run approxsim.calibrate(model, batches) "
                "(post-training quantization) or a training step first"
            )
        return self.lo, self.hi

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        before = len(missing_keys)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        # A float checkpoint has no observer: load it and leave the observer empty.
        mine = {prefix + name for name in ("lo", "hi", "state")}
        if mine.issubset(missing_keys[before:]):
            missing_keys[before:] = [k for k in missing_keys[before:] if k not in mine]

    def extra_repr(self) -> str:
        """The state and range."""
        state = ("empty", "running", "frozen")[int(self.state)]
        return f"{state}, lo={float(self.lo):.4g}, hi={float(self.hi):.4g}"


def weight_range(weight: Tensor, per_channel: bool) -> tuple[Tensor, Tensor]:
    """The min and max of a weight, per output channel (dimension 0) or over the tensor.

    Args:
        weight: ``(out, ...)``.
        per_channel: One range per output channel.

    Returns:
        ``(lo, hi)``, shape ``(out,)`` or ``()``.
    """
    w = weight.detach()
    if per_channel:
        flat = w.reshape(w.shape[0], -1)
        return flat.amin(1), flat.amax(1)
    return w.min(), w.max()
