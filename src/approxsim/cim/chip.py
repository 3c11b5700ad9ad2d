"""Put a model on a simulated CIM chip: layer selection, chip instances and weight swapping.

A chip instance is a :class:`Perturbation`: the device deviations ``Δg`` of every device of
every mapped layer. :func:`chip` is a context manager inside which the model computes with the
chip's weights, ``w_chip = Q(w) + s · δ`` (``Q``: the quantized weight, ``s``: the layer's
``max|w|``, ``δ``: the weight change of the deviations in units of ``s``, see
:mod:`approxsim.cim.device`). Nothing is copied and no model code is changed: a forward
pre-hook on each mapped layer puts the chip's weight in place of the ``weight`` Parameter for
the duration of that layer's forward call, and a forward hook (run even when the forward
raises) puts the Parameter back. So gradients flow to whatever the chip's weight is computed
from (the deviations, for a worst-case search; the Parameters, for training), and the model's
weights are exactly the same objects, unmodified, afterwards.

This works on any layer that reads ``self.weight`` in its forward: ``nn.Linear``,
``nn.Conv1d/2d/3d`` and approxsim's ``ApproxLinear`` / ``ApproxConv1d/2d`` (the chip's weight
then goes through the approximate multiplier). Layers inside ``nn.MultiheadAttention`` are not
called as modules (the attention reads their weights directly) and are never mapped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from approxsim._io import SealError, atomic_write_bytes, seal, unseal
from approxsim._select import LayerSelection
from approxsim._select import Pattern as Pattern
from approxsim._select import PatternArg as PatternArg
from approxsim.cim.device import (
    CIMError,
    DeviceConfig,
    device_to_weight_delta,
    effective_deviations,
    quantize_weight,
    sample_device_deviations,
    weight_sign,
)

__all__ = [
    "PERTURBATION_FORMAT",
    "PatternArg",
    "Perturbation",
    "ChipHandle",
    "select_layers",
    "weights_digest",
    "sample_perturbation",
    "chip",
    "weight_deltas",
]

PERTURBATION_FORMAT = "approxsim.cim.perturbation/1"
#: First line of a perturbation file: what it is; the SHA-256 of the payload follows (the
#: checkpoints' integrity scheme, :func:`approxsim._io.seal`).
_PERTURBATION_MAGIC = b"APPROXSIM-CIM-PERTURBATION/1\n"
#: How a torch file (a zip archive) starts: perturbation files written before the header.
_ZIP_MAGIC = b"PK\x03\x04"

#: Layer types mapped to devices (subclasses included: approxsim's Approx* layers).
_MAPPED_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


# ---------------------------------------------------------------------------- selection
def select_layers(
    model: nn.Module, include: PatternArg = None, exclude: PatternArg = None
) -> dict[str, nn.Module]:
    """The layers of ``model`` that a chip maps to devices, by qualified name.

    Selection works as in :func:`approxsim.convert_model`: ``include`` / ``exclude`` take
    fnmatch patterns on qualified module names or ``nn.Module`` types; a pattern selects the
    module it names and everything inside it; exclude wins. Of the selected modules, those
    that are ``nn.Linear`` or ``nn.Conv1d/2d/3d`` (or subclasses such as ``ApproxLinear``)
    with a ``weight`` are mapped.

    Args:
        model: Any model.
        include: Map only these; default: every linear and convolution layer.
        exclude: Leave these digital (exact weights).

    Returns:
        ``{name: module}`` in module order (a module registered twice appears once).

    Raises:
        CIMError: bad patterns, or no layer selected (the message lists the layer names).

    Warns:
        UserWarning: selected layers inside ``nn.MultiheadAttention`` (not mapped).
    """
    if not isinstance(model, nn.Module):
        raise CIMError(f"expected an nn.Module, got {type(model).__name__}")
    selection = LayerSelection.parse(include, exclude, error=CIMError, example="features.*")
    found: dict[str, nn.Module] = {}
    seen: set[int] = set()
    skipped: list[str] = []

    def visit(module: nn.Module, name: str, chain: list[tuple[str, nn.Module]]) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        chain = chain + [(name, module)]
        chosen = selection.selects(chain)
        if isinstance(module, nn.MultiheadAttention):
            if chosen:
                skipped.append(name or "(model)")
            return
        if (
            chosen
            and isinstance(module, _MAPPED_TYPES)
            and isinstance(module._parameters.get("weight"), nn.Parameter)
            and not isinstance(module.weight, nn.parameter.UninitializedParameter)
        ):
            found[name] = module
        for child_name, child in module.named_children():
            visit(child, f"{name}.{child_name}" if name else child_name, chain)

    visit(model, "", [])
    if skipped:
        warnings.warn(
            f"CIM: attention modules read their projection weights directly, so they stay "
            f"digital (not mapped to devices): {', '.join(skipped)}",
            UserWarning,
            stacklevel=2,
        )
    if not found:
        names = ", ".join(n for n, _ in model.named_modules() if n) or "(none)"
        raise CIMError(
            f"include={include!r} / exclude={exclude!r} select no linear or convolution layer "
            f"to map to devices; module names: {names}"
        )
    return found


def weights_digest(layers: Mapping[str, nn.Module]) -> str:
    """SHA-256 of the names, shapes and float32 values of the layers' weights.

    A saved :class:`Perturbation` records it, so replaying it on other weights is caught.
    """
    h = hashlib.sha256()
    for name, module in layers.items():
        w = module._parameters["weight"]
        assert w is not None
        h.update(name.encode() + b"\0" + repr(tuple(w.shape)).encode() + b"\0")
        h.update(w.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- perturbation
@dataclass
class Perturbation:
    """One chip instance: the device deviations of every mapped layer.

    Attributes:
        config: The device model (bits, mapping) the deviations belong to.
        deviations: ``{layer name: (devices_per_weight, *weight.shape) float32}`` device
            deviations ``Δg`` in units of a device's full range (see
            :func:`~approxsim.cim.device.device_conductances` for the device order). With
            ``config.clip`` the chip's devices realize
            :func:`~approxsim.cim.device.effective_deviations` of them (the weights are
            formed from those; :func:`sample_perturbation` stores them already clipped).
        digest: :func:`weights_digest` of the model the chip was made for (``None``: not
            recorded, no check).
        meta: JSON-serializable notes (how it was made: seed, search settings, accuracy).
    """

    config: DeviceConfig
    deviations: dict[str, Tensor]
    digest: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.config, DeviceConfig):
            raise CIMError(f"config must be a DeviceConfig, got {type(self.config).__name__}")
        d = self.config.devices_per_weight
        for name, t in self.deviations.items():
            if not isinstance(t, Tensor) or t.dim() < 1 or t.shape[0] != d:
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise CIMError(
                    f"perturbation of layer {name!r} must have {d} devices per weight "
                    f"(first dimension), got {shape}"
                )

    def check_model(self, layers: Mapping[str, nn.Module], *, strict: bool = True) -> None:
        """Check that the perturbation fits ``layers`` (names, shapes and, if ``strict``, the
        weights it was made for).

        Raises:
            CIMError: a missing layer, a shape mismatch, or different weights.
        """
        missing = sorted(set(self.deviations) - set(layers))
        if missing:
            raise CIMError(
                f"the perturbation has layers the model does not map: {missing}; model layers: "
                f"{list(layers)}"
            )
        for name, dg in self.deviations.items():
            w = layers[name]._parameters["weight"]
            assert w is not None
            if tuple(dg.shape[1:]) != tuple(w.shape):
                raise CIMError(
                    f"the perturbation of layer {name!r} is for weights of shape "
                    f"{tuple(dg.shape[1:])}, the model's are {tuple(w.shape)}"
                )
        if strict and self.digest is not None:
            sub = {n: layers[n] for n in self.deviations}
            if weights_digest(sub) != self.digest:
                raise CIMError(
                    "the perturbation was made for other weights (its weights digest does "
                    "not match this model's); load the checkpoint it was made for, or pass "
                    "strict=False (--no-strict) to apply it anyway"
                )

    def weight_deltas(self, layers: Mapping[str, nn.Module]) -> dict[str, Tensor]:
        """``{name: δ}``: the weight change of each layer in units of its scale ``s``.

        With ``config.clip`` the deviations are clipped to the devices' range first (a no-op
        for those :func:`sample_perturbation` stored, which are clipped already; it keeps
        any other perturbation of a clipping device model physical too).
        """
        out = {}
        for name, dg in self.deviations.items():
            w = layers[name]._parameters["weight"]
            assert w is not None
            dg = effective_deviations(dg.to(w.device, torch.float32), w, self.config)
            out[name] = device_to_weight_delta(dg, weight_sign(w.detach()), self.config)
        return out

    def stats(self, layers: Mapping[str, nn.Module] | None = None) -> dict[str, Any]:
        """Summary numbers: devices, ``max|Δg|``, ``rms(Δg)``; with ``layers`` also the
        weight change ``δ = Δw/s``: ``max|δ|``, ``mean|δ|``, ``rms(δ)`` and the fraction of
        weights with ``|δ|`` within 1% of the largest (at the bound of a search)."""
        flat = (
            torch.cat([d.reshape(-1) for d in self.deviations.values()])
            if self.deviations
            else torch.zeros(0)
        ).double()
        out: dict[str, Any] = {
            "layers": len(self.deviations),
            "devices": int(flat.numel()),
            "max_abs_device_deviation": float(flat.abs().max()) if flat.numel() else 0.0,
            "rms_device_deviation": float(flat.square().mean().sqrt()) if flat.numel() else 0.0,
        }
        if layers is not None:
            d = torch.cat([t.reshape(-1) for t in self.weight_deltas(layers).values()]).double()
            m = float(d.abs().max()) if d.numel() else 0.0
            out.update(
                weights=int(d.numel()),
                max_abs_weight_delta=m,
                mean_abs_weight_delta=float(d.abs().mean()),
                rms_weight_delta=float(d.square().mean().sqrt()),
                fraction_at_max=float((d.abs() >= 0.99 * m).double().mean()) if m > 0 else 0.0,
            )
        return out

    # ------------------------------------------------------------------ files
    def save(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        inputs: Iterable[str | os.PathLike[str] | None] = (),
    ) -> Path:
        """Write the perturbation atomically: a header line, the SHA-256 of the payload, and
        the payload (torch format, loadable with ``weights_only=True``).

        Args:
            path: The file to write.
            overwrite: Replace an existing file (``False``: refuse it).
            inputs: Files the caller read (a checkpoint); ``path`` may never be one of them.

        Returns:
            The path written.

        Raises:
            OutputExistsError: ``path`` exists (without ``overwrite``), is a folder, or is
                one of ``inputs``.
        """
        buf = io.BytesIO()
        torch.save(
            {
                "format": PERTURBATION_FORMAT,
                "config": self.config.to_dict(),
                "deviations": {
                    k: v.detach().cpu().contiguous() for k, v in self.deviations.items()
                },
                "digest": self.digest,
                "meta": self.meta,
            },
            buf,
        )
        return atomic_write_bytes(
            path, seal(_PERTURBATION_MAGIC, buf.getvalue()), overwrite=overwrite, inputs=inputs
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Perturbation:
        """Read a file written by :meth:`save`, verified and validated.

        The checksum must match, and the contents must be a perturbation: a valid device
        model, finite float deviations of the right number of devices per weight, keyed by
        layer name. Files written before perturbation files had a checksum are still read
        (and validated).

        Raises:
            CIMError: a missing, damaged or foreign file, or contents that are not a valid
                perturbation (the message names what is wrong).
        """
        p = Path(path)
        if not p.is_file():
            raise CIMError(f"no perturbation file at {p}")
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise CIMError(f"cannot read the perturbation file {p}: {exc.strerror}") from None
        regenerate = "regenerate it (approxsim cim attack --save, or cim mc --save-worst)"
        if raw.startswith(_ZIP_MAGIC):
            payload = raw  # written before the header existed
        else:
            try:
                payload = unseal(raw, _PERTURBATION_MAGIC, str(p))
            except SealError as exc:
                if exc.args[1] == "checksum":
                    raise CIMError(
                        f"the perturbation file {p} is damaged (its checksum does not match its "
                        f"contents); {regenerate}"
                    ) from None
                raise CIMError(
                    f"{p} is not an approxsim CIM perturbation (written by `approxsim cim "
                    "attack --save` or Perturbation.save)"
                ) from None
        try:
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise CIMError(f"{p} could not be read as a perturbation file: {exc}") from None
        if not isinstance(state, dict) or state.get("format") != PERTURBATION_FORMAT:
            raise CIMError(
                f"{p} is not an approxsim CIM perturbation (written by `approxsim cim attack "
                "--save` or Perturbation.save)"
            )
        return _perturbation_from_state(state, f"the perturbation file {p}", regenerate)


def _perturbation_from_state(state: dict[str, Any], what: str, todo: str) -> Perturbation:
    """Validate the contents of a perturbation file and build it."""
    missing = [k for k in ("config", "deviations") if k not in state]
    if missing:
        raise CIMError(f"{what} lacks {missing}; {todo}")
    config, devs = state["config"], state["deviations"]
    digest, meta = state.get("digest"), state.get("meta")
    if not isinstance(config, dict):
        raise CIMError(f"{what} has a device model of type {type(config).__name__}; {todo}")
    try:
        cfg = DeviceConfig.from_dict(config)
    except (CIMError, TypeError, ValueError) as exc:
        raise CIMError(f"{what} has an invalid device model ({exc}); {todo}") from None
    if not isinstance(devs, dict):
        raise CIMError(f"{what} has deviations of type {type(devs).__name__}; {todo}")
    for name, t in devs.items():
        if not isinstance(name, str) or not isinstance(t, Tensor):
            raise CIMError(
                f"{what} maps {name!r} to a {type(t).__name__}: deviations are tensors keyed "
                f"by layer name; {todo}"
            )
        if not t.is_floating_point():
            raise CIMError(f"{what}: the deviations of layer {name!r} are {t.dtype}; {todo}")
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CIMError(
                f"{what}: the deviations of layer {name!r} hold {bad} non-finite value(s) "
                f"(NaN or inf); {todo}"
            )
    if digest is not None and not (
        isinstance(digest, str) and len(digest) == 64 and all(c in _HEX for c in digest)
    ):
        raise CIMError(f"{what} has an invalid weights digest {digest!r}; {todo}")
    if meta is not None and not isinstance(meta, dict):
        raise CIMError(f"{what} has notes (meta) of type {type(meta).__name__}; {todo}")
    deviations = {k: v.to(torch.float32) for k, v in devs.items()}
    try:
        return Perturbation(cfg, deviations, digest, dict(meta or {}))
    except CIMError as exc:
        raise CIMError(f"{what}: {exc}; {todo}") from None


_HEX = frozenset("0123456789abcdef")


def sample_perturbation(
    model: nn.Module,
    config: DeviceConfig,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    include: PatternArg = None,
    exclude: PatternArg = None,
) -> Perturbation:
    """Draw one chip instance: device-to-device deviations of every mapped layer.

    With ``config.clip`` the stored deviations are the clipped, effective ones
    (:func:`~approxsim.cim.device.effective_deviations` of the draw for the model's current
    weights), so the file describes the chip's devices as programmed.

    Args:
        model: The model to map.
        config: The device model (``sigma``, write-verify, ``clip``).
        seed: Seed of the draw (reproducible); ``generator`` wins when both are given.
        generator: CPU generator to draw from; default: a new one seeded with ``seed``, or
            torch's global RNG when neither is given.
        include: Layers to map (as :func:`select_layers`).
        exclude: Layers to keep digital.

    Returns:
        A :class:`Perturbation` (layers in model order, deviations on the CPU).
    """
    layers = select_layers(model, include, exclude)
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    devs = {}
    for name, m in layers.items():
        w = m._parameters["weight"]
        assert w is not None
        dg = sample_device_deviations(w.shape, config, generator)
        devs[name] = effective_deviations(dg, w, config)
    meta = {"kind": "monte-carlo", "seed": seed, "sigma": config.sigma}
    return Perturbation(config, devs, weights_digest(layers), meta)


# ---------------------------------------------------------------------------- swapping
WeightFn = Callable[[str, Tensor], Tensor]


class ChipHandle:
    """What :func:`chip` and :func:`weight_deltas` yield: the mapped layers and how often
    each was called.

    Attributes:
        layers: ``{name: module}`` of the mapped layers.
        calls: ``{name: forward calls}`` since the context was entered.
    """

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        self.layers = layers
        self.calls = dict.fromkeys(layers, 0)

    def check_called(self) -> None:
        """Raise unless every mapped layer ran its forward at least once.

        A layer whose weight is used without calling the layer (tied weights read as
        ``layer.weight``) would silently compute with exact weights.

        Raises:
            CIMError: naming the layers that never ran.
        """
        idle = [n for n, c in self.calls.items() if c == 0]
        if idle:
            raise CIMError(
                f"mapped layer(s) {idle} never ran their forward, so their weights were used "
                "without the chip's deviations (tied weights read directly?); exclude them"
            )


@contextlib.contextmanager
def _swapped(model: nn.Module, layers: dict[str, nn.Module], fn: WeightFn) -> Iterator[ChipHandle]:
    """Replace each layer's ``weight`` by ``fn(name, parameter)`` during its forward calls."""
    handle = ChipHandle(layers)
    hooks: list[torch.utils.hooks.RemovableHandle] = []
    saved: dict[int, list[nn.Parameter]] = {}

    def make_hooks(name: str, module: nn.Module) -> None:
        def pre(mod: nn.Module, args: Any) -> None:
            param = mod._parameters["weight"]
            assert isinstance(param, nn.Parameter)
            saved.setdefault(id(mod), []).append(param)
            handle.calls[name] += 1
            # Swapped in the Parameter dict itself (keeps the dict's order, so state_dict
            # keys are unchanged); nn.Module.__getattr__ returns it as ``mod.weight``.
            mod._parameters["weight"] = fn(name, param)  # type: ignore[assignment]

        def post(mod: nn.Module, args: Any, output: Any) -> None:
            stack = saved.get(id(mod))
            if stack:
                mod._parameters["weight"] = stack.pop()

        hooks.append(module.register_forward_pre_hook(pre))
        hooks.append(module.register_forward_hook(post, always_call=True))

    for name, module in layers.items():
        make_hooks(name, module)
    try:
        yield handle
    finally:
        for h in hooks:
            h.remove()
        for module in layers.values():  # a forward that never reached its post hook
            stack = saved.get(id(module))
            while stack:
                module._parameters["weight"] = stack.pop()


def _effective_weight_fn(
    layers: dict[str, nn.Module],
    config: DeviceConfig,
    deltas: Mapping[str, Tensor | None],
    *,
    quantize: bool,
    straight_through: bool,
    read_generator: torch.Generator | None,
) -> WeightFn:
    """``fn(name, w) = Q(w) + s · (δ + read noise)``, cached while nothing needs gradients."""
    cache: dict[str, tuple[int, Tensor]] = {}
    read_std = config.read_noise * config.weight_std_factor

    def fn(name: str, w: Tensor) -> Tensor:
        delta = deltas.get(name)
        static = not torch.is_grad_enabled() or not (
            w.requires_grad or (delta is not None and delta.requires_grad)
        )
        hit = cache.get(name) if static else None
        if hit is not None and hit[0] == w._version:
            base = hit[1]
        else:
            if quantize:
                wq, s = quantize_weight(w, config.weight_bits, straight_through=straight_through)
            else:
                wq, s = w, w.detach().abs().amax()
            base = wq if delta is None else wq + s * delta.to(w.dtype)
            if static:
                base = base.detach()
                cache[name] = (w._version, base)
        if read_std > 0:
            # Per-read noise: Σ_i c_i n_i of independent N(0, σ_r²) device reads is
            # N(0, σ_r² Σ c_i²) per weight (times sets), drawn here directly per weight.
            s = w.detach().abs().amax()
            noise = torch.randn(w.shape, generator=read_generator, dtype=torch.float32)
            base = base + (s * read_std) * noise.to(w.device, w.dtype)
        return base

    return fn


@contextlib.contextmanager
def chip(
    model: nn.Module,
    perturbation: Perturbation | None = None,
    *,
    config: DeviceConfig | None = None,
    include: PatternArg = None,
    exclude: PatternArg = None,
    read_seed: int | None = None,
    strict: bool = True,
) -> Iterator[ChipHandle]:
    """Run ``model`` on a simulated chip inside the ``with`` block.

    Every mapped layer computes with ``w_chip = Q(w) + s · δ`` where ``δ`` is the
    perturbation's weight change (none: the nominal, quantized chip), plus fresh per-read
    noise in every forward pass when ``config.read_noise > 0``. The model's Parameters are
    never modified; they are back in place when the block ends (also on errors).

    Args:
        model: The model (plain or converted to approximate layers).
        perturbation: The chip instance (device deviations), e.g. from
            :func:`sample_perturbation`, a worst-case search or :meth:`Perturbation.load`;
            ``None``: a chip without device-to-device variation.
        config: The device model; default: the perturbation's, else ``DeviceConfig()``.
            With a perturbation it must have the same bits, mapping and ``clip`` (``sigma``
            and the write-verify settings do not matter then; ``read_noise`` does).
        include: Layers to map when there is no perturbation (a perturbation maps its own).
        exclude: Layers to keep digital when there is no perturbation.
        read_seed: Seed of the per-read noise (reproducible); ``None``: torch's global RNG.
        strict: Check that the perturbation was made for this model's weights.

    Yields:
        A :class:`ChipHandle`.

    Raises:
        CIMError: a perturbation that does not fit the model or the config.

    Example:
        >>> p = sample_perturbation(model, DeviceConfig(sigma=0.02), seed=0)
        >>> with chip(model, p):
        ...     logits = model(x)
    """
    if perturbation is not None:
        if config is None:
            config = perturbation.config
        elif (config.weight_bits, config.device_bits, config.mapping, config.clip) != (
            perturbation.config.weight_bits,
            perturbation.config.device_bits,
            perturbation.config.mapping,
            perturbation.config.clip,
        ):
            pc = perturbation.config
            raise CIMError(
                "the perturbation was made for another device model "
                f"({pc.weight_bits} bits, {pc.device_bits} per device, {pc.mapping}, "
                f"clip={pc.clip}) than config; pass a config with those settings (or none)"
            )
        all_layers = select_layers(model)
        perturbation.check_model(all_layers, strict=strict)
        layers = {n: all_layers[n] for n in perturbation.deviations}
        with torch.no_grad():
            deltas: dict[str, Tensor | None] = dict(perturbation.weight_deltas(layers))
    else:
        config = config or DeviceConfig()
        layers = select_layers(model, include, exclude)
        deltas = {}
    gen = None if read_seed is None else torch.Generator().manual_seed(int(read_seed))
    fn = _effective_weight_fn(
        layers, config, deltas, quantize=True, straight_through=False, read_generator=gen
    )
    with _swapped(model, layers, fn) as handle:
        yield handle


@contextlib.contextmanager
def weight_deltas(
    model: nn.Module,
    deltas: Mapping[str, Tensor | None],
    config: DeviceConfig,
    *,
    layers: Mapping[str, nn.Module] | None = None,
    straight_through: bool = False,
    quantize: bool = True,
    read_generator: torch.Generator | None = None,
) -> Iterator[ChipHandle]:
    """Run ``model`` with weight changes ``δ`` given per weight (differentiable).

    The building block of the worst-case search and of robustness training: inside the
    block, layer ``name`` computes with ``Q(w) + s · deltas[name]`` (``s`` = the layer's
    ``max|w|``, detached). Gradients reach ``deltas`` and, through the straight-through
    estimator when ``straight_through``, the Parameters.

    Args:
        model: The model.
        deltas: ``{layer name: δ}`` (shape of the layer's weight; ``None``: no change but
            still quantized). Layers not named are left alone.
        config: The device model (``weight_bits``; ``read_noise`` adds per-read noise).
            ``clip`` is not applied here: ``deltas`` are per weight and used as given (to
            clip device deviations, pass them through
            :func:`~approxsim.cim.device.effective_deviations` before
            :func:`~approxsim.cim.device.device_to_weight_delta`).
        layers: The model's mapped layers (default: :func:`select_layers` of ``model``,
            restricted to ``deltas``' names).
        straight_through: Pass gradients through the quantization to the Parameters.
        quantize: Quantize the weights first (``False``: ``w + s · δ``).
        read_generator: Generator of the per-read noise.

    Yields:
        A :class:`ChipHandle`.

    Raises:
        CIMError: unknown layer names or shapes that do not match.
    """
    every = dict(layers) if layers is not None else select_layers(model)
    unknown = sorted(set(deltas) - set(every))
    if unknown:
        raise CIMError(f"deltas name layers the model does not map: {unknown}")
    chosen = {n: every[n] for n in deltas}
    for n, d in deltas.items():
        w = chosen[n]._parameters["weight"]
        assert w is not None
        if d is not None and tuple(d.shape) != tuple(w.shape):
            raise CIMError(
                f"delta of layer {n!r} has shape {tuple(d.shape)}, the weight {tuple(w.shape)}"
            )
    fn = _effective_weight_fn(
        chosen,
        config,
        deltas,
        quantize=quantize,
        straight_through=straight_through,
        read_generator=read_generator,
    )
    with _swapped(model, chosen, fn) as handle:
        yield handle
