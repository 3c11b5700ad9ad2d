"""The device model of an analog compute-in-memory (CIM) chip: how a weight becomes devices.

A layer's weights are scaled by ``s = max|w|`` of the layer, their magnitudes quantized to
``weight_bits`` bits and bit-sliced over ``K = weight_bits / device_bits`` devices of
``device_bits`` bits each, the most significant first. Every device holds a conductance in
[0, 1] (a fraction of its full range); device ``i`` (``i = 0`` most significant) carries the
weight's bits at significance ``2^(-device_bits·i)``. With ``L = 2^weight_bits - 1`` levels and
``q = round(|w|/s · L)``,

    w_chip = sign(w) · s · Σ_i c_i · g_i,    g_i = digit_i(q) / (2^device_bits - 1),
    c_i = (2^device_bits - 1) · 2^(weight_bits - device_bits·(i+1)) / L,

so ``Σ_i c_i = 1`` (all devices at full conductance give ``|w| = s``). A device deviation
``Δg_i`` (a fraction of its full range) moves the weight by ``sign(w) · s · Σ_i c_i Δg_i``. With
``Δg_i`` independent ``N(0, σ²)``, ``Var(Δw) = s² σ² Σ_i c_i²``.

Conductance clipping (:attr:`DeviceConfig.clip`, off by default): a device cannot go below 0
or above its full range, so its programmed conductance is ``clip(g_i + Δg_i, 0, 1)`` and its
effective deviation ``clip(g_i + Δg_i, 0, 1) - g_i`` (:func:`effective_deviations`) depends
on the digit it holds. Clipping never makes a deviation larger, so ``|Δw|`` bounds still
hold; the variance formula above becomes an upper bound on each weight's variance over chips
(clipping is 1-Lipschitz), and ``Δw`` gains a mean that depends on the weight's digits (a
device at 0 only moves up, one at full range only down).

Signed weights have two mappings (:attr:`DeviceConfig.mapping`):

* ``"sign-magnitude"`` — one set of ``K`` devices holds ``|w|``; the sign is a digital bit
  applied in the periphery (a weight that quantizes to 0 keeps the sign of ``w``, + for 0);
* ``"differential"`` — two sets (``G+`` for positive weights, ``G-`` for negative ones, the
  unused set programmed to 0), ``w = s · Σ_i c_i (g+_i - g-_i)``. Both sets deviate, so
  ``Δw = s · Σ_i c_i (Δg+_i - Δg-_i)`` and the variance doubles.

A per-device bound ``|Δg_i| ≤ ε`` reaches exactly the per-weight interval
``|Δw| ≤ s · ε · Σ_i c_i · n`` (``n`` = 1, or 2 for differential): the triangle inequality
bounds it and all devices at ``±ε`` with the same sign attain it. So a worst-case search over
weights with that per-weight bound is a search over devices (:func:`per_weight_bound`).

Biases are not mapped to devices (they are added digitally).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from approxsim.errors import ApproxsimError

__all__ = [
    "CIMError",
    "DeviceConfig",
    "MAPPINGS",
    "MAX_WEIGHT_BITS",
    "slice_coefficients",
    "per_weight_bound",
    "per_device_bound",
    "weight_sign",
    "quantize_weight",
    "device_conductances",
    "sample_device_deviations",
    "device_to_weight_delta",
    "weight_delta_to_device",
    "effective_deviations",
]

#: Ways of storing signed weights on devices that hold non-negative conductances.
MAPPINGS = ("sign-magnitude", "differential")

#: Largest supported weight precision (float32 weights have 24 significant bits).
MAX_WEIGHT_BITS = 16


class CIMError(ApproxsimError, ValueError):
    """A CIM setting or input that cannot be used; the message says what to change."""


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise CIMError(f"{name} must be an integer >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise CIMError(f"{name} must be an integer <= {hi}, got {value!r}")


def _check_nonneg(name: str, value: Any, *, positive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        raise CIMError(
            f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}"
        )


@dataclass(frozen=True)
class DeviceConfig:
    """How each weight of a layer is stored on non-volatile devices, and how they deviate.

    Validated on construction. The defaults are the setting of Yan, Hu and Shi (ICCAD 2022):
    8-bit weights on four 2-bit devices.

    Raises:
        CIMError: an invalid field (the message names it and says what is allowed).

    Example:
        >>> cfg = DeviceConfig(sigma=0.02)            # 8 bits on 4 devices of 2 bits
        >>> cfg.devices_per_weight, round(cfg.weight_std_factor, 4)
        (4, 0.7776)
    """

    weight_bits: int = 8
    """Bits of a weight's magnitude after quantization (``N``, 1..16): magnitudes become
    ``round(|w|/s · (2^N - 1))`` with ``s`` the layer's largest ``|w|``."""

    device_bits: int = 2
    """Bits stored per device (``m``); ``weight_bits`` must be a multiple of it. The weight is
    split over ``N/m`` devices with significance ``2^(-m·i)``, ``i = 0`` the most significant."""

    sigma: float = 0.0
    """Standard deviation of the device-to-device variation ``Δg ~ N(0, σ²)`` in units of a
    device's full conductance range. Drawn once per chip (fixed for the chip's lifetime)."""

    mapping: str = "sign-magnitude"
    """Signed weights: ``"sign-magnitude"`` (one device set, digital sign) or
    ``"differential"`` (a positive and a negative set; both deviate)."""

    write_verify_tolerance: float | None = None
    """Write-verify: verified devices are re-programmed until ``|Δg| ≤ tolerance``, so their
    deviation is ``N(0, σ²)`` truncated to ``[-tolerance, tolerance]``. ``None``: no
    write-verify."""

    write_verify_slices: int | None = None
    """How many of the most significant slices are write-verified (1..K; the same slices in
    both sets of a differential pair); ``None``: all of them. Needs
    ``write_verify_tolerance``."""

    read_noise: float = 0.0
    """Standard deviation of per-read (cycle-to-cycle) noise per device, in the same unit as
    ``sigma``, drawn afresh for every forward pass; 0: none. Simulated per weight (the sum of
    the devices' noise), so it is not clipped by ``clip``."""

    clip: bool = False
    """Clip every device's programmed conductance ``g_i + Δg_i`` to its physical range
    ``[0, 1]``: the effective deviation becomes ``clip(g_i + Δg_i, 0, 1) - g_i`` and depends
    on the level ``g_i`` (digit) the device holds (see :func:`effective_deviations`). Applies to
    chips formed from device deviations (:func:`~approxsim.cim.sample_perturbation`,
    :func:`~approxsim.cim.chip`, noise-injection training) and to the worst-case search,
    which then searches per device inside each device's range; adversarial training refuses
    it. ``False``: deviations are purely additive (the default)."""

    def __post_init__(self) -> None:
        _check_int("weight_bits", self.weight_bits, 1, MAX_WEIGHT_BITS)
        _check_int("device_bits", self.device_bits, 1, self.weight_bits)
        if self.weight_bits % self.device_bits:
            raise CIMError(
                f"weight_bits={self.weight_bits} is not a multiple of device_bits="
                f"{self.device_bits}; every device must hold the same number of bits "
                f"(e.g. weight_bits={self.weight_bits - self.weight_bits % self.device_bits})"
            )
        _check_nonneg("sigma", self.sigma)
        if self.mapping not in MAPPINGS:
            raise CIMError(f"mapping must be one of {MAPPINGS}, got {self.mapping!r}")
        if self.write_verify_tolerance is not None:
            _check_nonneg("write_verify_tolerance", self.write_verify_tolerance, positive=True)
        if self.write_verify_slices is not None:
            if self.write_verify_tolerance is None:
                raise CIMError(
                    "write_verify_slices needs write_verify_tolerance (the bound the verified "
                    "devices are programmed to)"
                )
            _check_int("write_verify_slices", self.write_verify_slices, 1, self.slices)
        _check_nonneg("read_noise", self.read_noise)
        if not isinstance(self.clip, bool):
            raise CIMError(f"clip must be True or False, got {self.clip!r}")

    # ------------------------------------------------------------------ derived
    @property
    def slices(self) -> int:
        """``K = weight_bits / device_bits``: devices per weight in one set."""
        return self.weight_bits // self.device_bits

    @property
    def sets(self) -> int:
        """Device sets per weight: 1 (sign-magnitude) or 2 (differential)."""
        return 2 if self.mapping == "differential" else 1

    @property
    def devices_per_weight(self) -> int:
        """All devices of one weight: ``slices · sets``."""
        return self.slices * self.sets

    @property
    def coefficients(self) -> tuple[float, ...]:
        """``c_i``: the weight change (in units of ``s``) per unit device change, per slice."""
        return tuple(float(c) for c in slice_coefficients(self.weight_bits, self.device_bits))

    @property
    def weight_std_factor(self) -> float:
        """``sqrt(sets · Σ c_i²)``: ``std(Δw) = s · σ · weight_std_factor`` without
        write-verify."""
        return math.sqrt(self.sets * sum(c * c for c in self.coefficients))

    @property
    def verified_slices(self) -> int:
        """Number of write-verified slices per set (0 without write-verify)."""
        if self.write_verify_tolerance is None:
            return 0
        return self.slices if self.write_verify_slices is None else self.write_verify_slices

    def replace(self, **changes: Any) -> DeviceConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict.

        ``clip`` is written only when it is on, so results and run folders written without
        clipping keep the exact form they had before the field existed (and resuming them
        compares equal); :meth:`from_dict` reads a missing ``clip`` as ``False``.
        """
        d = dataclasses.asdict(self)
        if not self.clip:
            del d["clip"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceConfig:
        """Build from :meth:`to_dict`'s output.

        Raises:
            CIMError: unknown keys or invalid values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CIMError(f"unknown device config keys {unknown}; known: {sorted(names)}")
        return cls(**d)


# ---------------------------------------------------------------------------- slicing math
def slice_coefficients(
    weight_bits: int, device_bits: int, dtype: torch.dtype = torch.float64
) -> Tensor:
    """``c_i = (2^m - 1) · 2^(N - m·(i+1)) / (2^N - 1)`` for the ``K = N/m`` slices.

    A device change ``Δg_i`` (fraction of its range) changes the weight by ``s · c_i · Δg_i``
    (times the weight's sign in the sign-magnitude mapping). ``c_i`` falls by ``2^-m`` per
    slice and the ``c_i`` sum to 1.

    Args:
        weight_bits: ``N``.
        device_bits: ``m``, a divisor of ``N``.
        dtype: dtype of the result.

    Returns:
        ``(K,)`` tensor, most significant slice first.

    Raises:
        CIMError: invalid bit counts.
    """
    DeviceConfig(weight_bits=weight_bits, device_bits=device_bits)  # validates
    k = weight_bits // device_bits
    levels = 2.0**weight_bits - 1.0
    top = 2.0**device_bits - 1.0
    return torch.tensor(
        [top * 2.0 ** (weight_bits - device_bits * (i + 1)) / levels for i in range(k)],
        dtype=dtype,
    )


def per_weight_bound(eps_device: float, config: DeviceConfig) -> float:
    """The per-weight bound (fraction of ``s``) reachable under ``|Δg| ≤ eps_device``.

    ``eps_device · Σ c_i · sets``: ``eps_device`` for sign-magnitude, twice it for
    differential pairs.
    """
    _check_nonneg("eps", eps_device)
    return float(eps_device) * sum(config.coefficients) * config.sets


def per_device_bound(eps_weight: float, config: DeviceConfig) -> float:
    """The inverse of :func:`per_weight_bound`."""
    _check_nonneg("eps", eps_weight)
    return float(eps_weight) / (sum(config.coefficients) * config.sets)


def weight_sign(w: Tensor) -> Tensor:
    """``+1`` where ``w >= 0``, ``-1`` elsewhere (the sign bit of sign-magnitude storage)."""
    return torch.where(w < 0, -1.0, 1.0).to(w.dtype)


def _scale(w: Tensor) -> Tensor:
    """``s = max|w|`` (detached); 1 for an all-zero weight so divisions stay finite."""
    s = w.detach().abs().amax()
    return torch.where(s > 0, s, torch.ones_like(s))


def quantize_weight(
    w: Tensor, weight_bits: int, *, straight_through: bool = False
) -> tuple[Tensor, Tensor]:
    """The weight a chip stores before any deviation, and the layer scale.

    ``s = max|w|``; ``w_q = sign(w) · s · round(|w|/s · L) / L`` with ``L = 2^N - 1``.

    Args:
        w: A layer's weight (any shape).
        weight_bits: ``N``.
        straight_through: Pass gradients to ``w`` as if the rounding were the identity
            (straight-through estimator), for training; else ``w_q`` carries ``w``'s
            gradient through the rounding (zero almost everywhere).

    Returns:
        ``(w_q, s)``: same shape as ``w``; ``s`` a 0-d detached tensor (1 for an all-zero
        weight).
    """
    s = _scale(w)
    levels = 2.0**weight_bits - 1.0
    wd = w.detach() if straight_through else w
    wq = torch.round(wd.abs() / s * levels) / levels * s * weight_sign(wd)
    if straight_through:
        wq = w + (wq - w).detach()
    return wq, s


def device_conductances(w: Tensor, config: DeviceConfig) -> Tensor:
    """The nominal conductances (fractions of full range) of every device of ``w``.

    Args:
        w: A layer's weight.
        config: The device model.

    Returns:
        ``(devices_per_weight, *w.shape)`` float tensor: slices of the magnitude, most
        significant first; for ``"differential"`` the ``G+`` slices then the ``G-`` slices
        (zeros on the side a weight does not use).
    """
    s = _scale(w)
    levels = 2**config.weight_bits - 1
    q = torch.round(w.detach().abs() / s * levels).to(torch.int64)
    top = 2**config.device_bits - 1
    digits = []
    for i in range(config.slices):
        shift = config.weight_bits - config.device_bits * (i + 1)
        digits.append(((q >> shift) & top).to(w.dtype) / top)
    g = torch.stack(digits)
    if config.sets == 1:
        return g
    pos = (w.detach() >= 0).to(w.dtype)
    return torch.cat([g * pos, g * (1 - pos)])


def _truncated_normal(
    shape: tuple[int, ...], sigma: float, bound: float, generator: torch.Generator | None
) -> Tensor:
    """``N(0, σ²)`` conditioned on ``|x| ≤ bound`` (inverse CDF, in float64)."""
    if sigma == 0:
        return torch.zeros(shape, dtype=torch.float64)
    a = math.erf(bound / (sigma * math.sqrt(2.0)))  # P(|x| <= bound) = Φ(b) - Φ(-b)
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    # x = σ √2 erfinv(v) with v uniform in (-a, a); clamp guards erfinv(±1) = ±inf.
    v = ((2.0 * u - 1.0) * a).clamp(-1 + 1e-16, 1 - 1e-16)
    return (sigma * math.sqrt(2.0) * torch.erfinv(v)).clamp(-bound, bound)


def sample_device_deviations(
    shape: tuple[int, ...] | torch.Size,
    config: DeviceConfig,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One chip's device-to-device deviations ``Δg`` for a weight tensor of ``shape``.

    Unverified devices: ``N(0, σ²)``; write-verified slices: ``N(0, σ²)`` truncated to
    ``±write_verify_tolerance``.

    Args:
        shape: The weight's shape.
        config: The device model (``sigma``, write-verify settings).
        generator: Source of the random numbers (CPU); ``None``: torch's global RNG.

    Returns:
        float32 ``(devices_per_weight, *shape)``, in the order of
        :func:`device_conductances`.
    """
    shape = tuple(shape)
    k, sets = config.slices, config.sets
    out = torch.randn((sets, k, *shape), generator=generator, dtype=torch.float64)
    out *= config.sigma
    nv = config.verified_slices
    if nv:
        tol = config.write_verify_tolerance
        assert tol is not None  # verified_slices > 0
        out[:, :nv] = _truncated_normal((sets, nv, *shape), config.sigma, tol, generator)
    return out.reshape(sets * k, *shape).to(torch.float32)


def device_to_weight_delta(dg: Tensor, sign: Tensor, config: DeviceConfig) -> Tensor:
    """The weight change, in units of the layer scale ``s``, of device deviations ``dg``.

    ``sign · Σ_i c_i dg_i`` (sign-magnitude) or ``Σ_i c_i (dg+_i - dg-_i)`` (differential).

    Args:
        dg: ``(devices_per_weight, *shape)`` deviations.
        sign: ``(*shape)`` ±1 from :func:`weight_sign` (unused for differential).
        config: The device model.

    Returns:
        ``(*shape)`` tensor ``δ = Δw / s``; differentiable in ``dg``.
    """
    c = slice_coefficients(config.weight_bits, config.device_bits, dg.dtype).to(dg.device)
    k = config.slices
    view = (k,) + (1,) * (dg.dim() - 1)
    if config.sets == 1:
        return sign * (c.view(view) * dg).sum(0)
    return (c.view(view) * (dg[:k] - dg[k:])).sum(0)


def weight_delta_to_device(delta: Tensor, sign: Tensor, config: DeviceConfig) -> Tensor:
    """Device deviations that realize the weight change ``delta`` (units of ``s``) with the
    smallest largest ``|Δg|``: every device of a weight moves by the same amount.

    Inverse of :func:`device_to_weight_delta`; ``max|Δg| = max|δ| / (Σ c_i · sets)``.

    Args:
        delta: ``(*shape)`` weight change in units of the layer scale.
        sign: ``(*shape)`` ±1 from :func:`weight_sign`.
        config: The device model.

    Returns:
        ``(devices_per_weight, *shape)`` deviations.
    """
    total = sum(config.coefficients) * config.sets
    per = (delta / total).unsqueeze(0).expand(config.slices, *delta.shape)
    if config.sets == 1:
        return (per * sign).contiguous()
    return torch.cat([per, -per]).contiguous()


def effective_deviations(dg: Tensor, w: Tensor, config: DeviceConfig) -> Tensor:
    """The deviations the devices of ``w`` realize: ``dg``, or clipped to the device range.

    With ``config.clip`` a device programmed to ``g_i`` (:func:`device_conductances`) ends at
    ``clip(g_i + dg_i, 0, 1)``, so its effective deviation is
    ``clip(g_i + dg_i, 0, 1) - g_i``: a device at 0 only moves up, one at full range only
    down. A device inside its range keeps ``dg_i`` exactly, ``|effective| ≤ |dg|``
    everywhere, and clipping twice changes nothing.

    Args:
        dg: ``(devices_per_weight, *w.shape)`` deviations (order of
            :func:`device_conductances`).
        w: The layer's weight (the digits of its quantized magnitude set ``g_i``).
        config: The device model.

    Returns:
        ``dg`` itself when ``config.clip`` is off, else the clipped deviations (same shape,
        dtype and device as ``dg``).

    Raises:
        CIMError: ``dg`` does not have ``devices_per_weight`` devices of ``w``'s shape.
    """
    if not config.clip:
        return dg
    want = (config.devices_per_weight, *w.shape)
    if tuple(dg.shape) != want:
        raise CIMError(f"deviations must have shape {want} for this weight, got {tuple(dg.shape)}")
    g = device_conductances(w.detach(), config).to(dg.device, dg.dtype)
    # clip(g + dg, 0, 1) - g as dg clamped to [-g, 1 - g]: a device that is not clipped keeps
    # its deviation bit for bit, and clipping twice is exactly a no-op.
    return torch.clamp(dg, min=-g, max=1.0 - g)
