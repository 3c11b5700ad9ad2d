"""Swap a model's layers for their approximate twins and back, and report what was swapped.

:func:`convert_model` replaces every ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and
``nn.MultiheadAttention`` (or the ones selected by name patterns or types) by the matching
``approxsim.nn.Approx*`` layer; :func:`restore_model` swaps them back; :func:`conversion_report`
walks any model, converted here or loaded from disk, and says which layers multiply
approximately, which stay exact, and which multiply in native precision because approxsim
cannot convert them. Modules that multiply but cannot be converted are never skipped
silently: :func:`convert_model` warns with an :class:`UnsupportedModuleWarning`.

With an :class:`~approxsim.IntMultiplier` and ``quant=QuantConfig(...)`` the same walk makes
the layers quantized ones (``approxsim.nn.quant_layers``, ``approxsim.nn.quant_attention``;
see ``docs/quantization.md``); :func:`restore_model` turns those back into float layers too.

Torch's transformer encoder has a native fast path (``torch._transformer_encoder_layer_fwd``
and nested tensors) that reads the layers' weights directly in eval / no-grad mode and would
bypass converted layers; the converter switches it off for every encoder (layer) that holds a
converted module, and :func:`restore_model` switches it back on.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

# Pattern / PatternArg (the include / exclude forms) stay importable from here.
from approxsim._select import LayerSelection
from approxsim._select import Pattern as Pattern
from approxsim._select import PatternArg as PatternArg
from approxsim.errors import ApproxsimError
from approxsim.multipliers import Multiplier
from approxsim.multipliers.integer import IntMultiplier
from approxsim.nn import (
    ApproxConv1d,
    ApproxConv2d,
    ApproxLinear,
    ApproxModule,
    ApproxMultiheadAttention,
)
from approxsim.nn.quant import QuantConfig, QuantError, check_int_multiplier
from approxsim.nn.quant_attention import QuantMultiheadAttention
from approxsim.nn.quant_layers import QuantConv1d, QuantConv2d, QuantLinear, QuantModule
from approxsim.ops import PassMultipliers, resolve_passes

__all__ = [
    "convert_model",
    "restore_model",
    "conversion_report",
    "ConversionReport",
    "ReportEntry",
    "UnsupportedModuleWarning",
]

#: Torch classes converted, exactly these types (a user subclass may have its own forward).
_CONVERSIONS: dict[type[nn.Module], type[Any]] = {
    nn.Linear: ApproxLinear,
    NonDynamicallyQuantizableLinear: ApproxLinear,
    nn.Conv1d: ApproxConv1d,
    nn.Conv2d: ApproxConv2d,
    nn.MultiheadAttention: ApproxMultiheadAttention,
}

#: Torch classes converted to quantized layers by ``convert_model(..., quant=...)``.
_QUANT_CONVERSIONS: dict[type[nn.Module], type[Any]] = {
    nn.Linear: QuantLinear,
    NonDynamicallyQuantizableLinear: QuantLinear,
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
    nn.MultiheadAttention: QuantMultiheadAttention,
}

#: Either kind of converted layer (float approximate or quantized).
_CONVERTED = (ApproxModule, QuantModule)

#: Torch layers that multiply by their weights but have no approximate twin yet.
_UNSUPPORTED_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Bilinear,
    nn.RNNBase,
    nn.RNNCellBase,
)

#: Layers whose parameters are not multiplied into a GEMM (lookups, norms, elementwise).
_NOT_MULTIPLIES: tuple[type[nn.Module], ...] = tuple(
    t
    for t in (
        nn.Embedding,
        nn.EmbeddingBag,
        getattr(nn.modules.batchnorm, "_NormBase", nn.BatchNorm2d),
        nn.LayerNorm,
        nn.GroupNorm,
        nn.LocalResponseNorm,
        getattr(nn, "RMSNorm", None),
        nn.PReLU,
    )
    if t is not None
)

#: Name parts (split on "_") of parameters with additive roles: biases, position embeddings,
#: class tokens. A custom module's other matrix-shaped parameters are assumed to be multiplied.
_ADDITIVE_NAME_PARTS = frozenset(
    {
        "bias",
        "pos",
        "position",
        "positional",
        "embed",
        "embedding",
        "embeddings",
        "token",
        "tokens",
        "cls",
    }
)

# Attribute that records the transformer fast-path settings the converter changed.
_SAVED_FAST_PATH = "_approxsim_saved_fast_path"

_NATIVE = "native"


class UnsupportedModuleWarning(ApproxsimError, UserWarning):
    """A model holds layers that multiply but that approxsim cannot convert."""


class ReportEntry(NamedTuple):
    """One row of a :class:`ConversionReport`.

    Attributes:
        name: Qualified module name (``""`` for the model itself).
        type_name: The module's class name.
        multiplier: The multipliers of a converted layer; ``"native"`` for layers that run
            torch's own arithmetic.
    """

    name: str
    type_name: str
    multiplier: str


@dataclass(frozen=True)
class ConversionReport:
    """Which layers of a model multiply approximately, exactly, or natively (unsupported).

    Attributes:
        converted: ``Approx*`` layers, with their multipliers.
        left_exact: Convertible layers (``nn.Linear`` …) left as plain torch layers.
        unsupported: Layers that multiply by their weights but have no approximate twin
            (``nn.Conv3d``, ``nn.ConvTranspose*``, ``nn.Bilinear``, RNNs, custom subclasses
            of convertible layers, uninitialized lazy layers, and custom modules that own
            matrix-shaped parameters); they compute in native precision.
    """

    converted: list[ReportEntry] = field(default_factory=list)
    left_exact: list[ReportEntry] = field(default_factory=list)
    unsupported: list[ReportEntry] = field(default_factory=list)

    @property
    def fully_converted(self) -> bool:
        """True when no convertible or unsupported layer computes natively."""
        return not self.left_exact and not self.unsupported

    def __str__(self) -> str:
        rows = [("status", "module", "type", "multiplier")]
        for status, entries in (
            ("converted", self.converted),
            ("left exact", self.left_exact),
            ("unsupported", self.unsupported),
        ):
            rows += [(status, e.name or "(model)", e.type_name, e.multiplier) for e in entries]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            f"approxsim conversion report: {len(self.converted)} converted, "
            f"{len(self.left_exact)} left exact, {len(self.unsupported)} unsupported"
        ]
        for i, row in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


# ---------------------------------------------------------------------------- classification
def _owns_matrix_parameter(module: nn.Module) -> bool:
    for name, p in module.named_parameters(recurse=False):
        if p is None or _ADDITIVE_NAME_PARTS.intersection(name.lower().split("_")):
            continue
        if isinstance(p, nn.parameter.UninitializedParameter) or p.dim() >= 2:
            return True
    return False


def _classify(module: nn.Module) -> str | None:
    """'approx', 'convertible', 'unsupported', or None (not a multiplying layer)."""
    if isinstance(module, _CONVERTED):
        return "approx"
    if type(module) in _CONVERSIONS:
        return "convertible"
    if isinstance(module, _UNSUPPORTED_TYPES) or isinstance(module, tuple(_CONVERSIONS)):
        return "unsupported"  # includes custom subclasses and uninitialized lazy layers
    if isinstance(module, _NOT_MULTIPLIES):
        return None
    return "unsupported" if _owns_matrix_parameter(module) else None


def _walk(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(qualified name, module) for every module once; an attention module's children are
    part of it (its out_proj is not a layer of its own)."""
    seen: set[int] = set()

    def visit(module: nn.Module, name: str) -> Iterator[tuple[str, nn.Module]]:
        if id(module) in seen:
            return
        seen.add(id(module))
        yield name, module
        if isinstance(module, nn.MultiheadAttention):
            return
        for child_name, child in module.named_children():
            if child is not None:
                yield from visit(child, f"{name}.{child_name}" if name else child_name)

    yield from visit(model, "")


def conversion_report(model: nn.Module) -> ConversionReport:
    """Walk ``model`` and list its converted, exact and unsupported multiplying layers.

    Works on any model (converted by :func:`convert_model`, built with ``Approx*`` layers by
    hand, or loaded from disk). Embeddings, norms and activations are not multiplying layers
    and are not listed.

    Args:
        model: Any ``nn.Module``.

    Returns:
        A :class:`ConversionReport`; ``print(report)`` shows a table.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    _check_model(model, "conversion_report")
    report = ConversionReport()
    for name, module in _walk(model):
        kind = _classify(module)
        type_name = type(module).__name__
        if kind == "approx":
            if isinstance(module, QuantModule):
                described = module.scheme.describe()
            else:
                described = repr(cast(ApproxModule, module).multiplier)
            report.converted.append(ReportEntry(name, type_name, described))
        elif kind == "convertible":
            report.left_exact.append(ReportEntry(name, type_name, _NATIVE))
        elif kind == "unsupported":
            report.unsupported.append(ReportEntry(name, type_name, _NATIVE))
    return report


# ---------------------------------------------------------------------------- conversion
def convert_model(
    model: nn.Module,
    multiplier: Multiplier | str | PassMultipliers | IntMultiplier,
    *,
    include: PatternArg = None,
    exclude: PatternArg = None,
    inplace: bool = False,
    grad_input: Multiplier | str | None = None,
    grad_weight: Multiplier | str | None = None,
    quant: QuantConfig | None = None,
) -> nn.Module:
    """Swap the model's linear, convolution and attention layers for approximate twins.

    Every ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.MultiheadAttention`` (exactly
    these types) that the filters select becomes the matching ``approxsim.nn.Approx*`` layer
    sharing its Parameters; already converted layers that are selected get the new
    multipliers. Layers that multiply but cannot be converted (``nn.Conv3d``,
    ``nn.ConvTranspose*``, ``nn.Bilinear``, RNNs, custom subclasses of the layers above,
    uninitialized lazy layers, custom modules owning matrix parameters) stay native, and an
    :class:`UnsupportedModuleWarning` lists the selected ones. Transformer encoder fast paths
    that would bypass converted layers are switched off.

    Args:
        model: The model (or a single layer).
        multiplier: Forward multiplier: a :class:`~approxsim.Multiplier`, a name such as
            ``"mitchell7"``, or a :class:`~approxsim.ops.PassMultipliers`; or an
            :class:`~approxsim.IntMultiplier` for quantized layers (see ``quant``).
        include: Convert only these: fnmatch patterns on qualified module names
            (``"layer1.*"``), ``nn.Module`` types, or a list of them. A pattern selects the
            module it names and everything inside it. Default: everything.
        exclude: Leave these exact (same forms as ``include``); exclude wins over include.
        inplace: Swap inside ``model`` itself (layers share its Parameters). Default: work on
            a deep copy, so ``model`` is untouched and the result has its own weights.
        grad_input: Multiplier of the input-gradient GEMMs; default: ``multiplier``.
        grad_weight: Multiplier of the weight-gradient GEMMs; default: ``multiplier``.
        quant: Quantize instead: a :class:`~approxsim.QuantConfig` makes the selected layers
            quantized layers (``approxsim.nn.quant_layers``, ``quant_attention``) whose code
            products go through ``multiplier``, an :class:`~approxsim.IntMultiplier` or its
            name (an IntMultiplier object alone implies ``QuantConfig()``). Observe their
            activation ranges with :func:`~approxsim.calibrate` or training steps. Attention
            with ``add_bias_kv``/``add_zero_attn`` stays as it is (with a warning).

    Returns:
        The converted model (``model`` itself when ``inplace``; a new root module when the
        model is itself a single convertible layer).

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or a filter has the wrong type.
        MultiplierError: an unknown multiplier name or a wrong type.
        QuantError: ``quant`` with a float multiplier or with ``grad_input``/``grad_weight``,
            or a config that does not fit the multiplier.

    Warns:
        UnsupportedModuleWarning: selected layers that will keep multiplying natively.

    Note:
        A converted layer only takes effect where the model calls it as a module. Code that
        reads a layer's weight and multiplies by itself (``F.linear(x, self.embed.weight)``
        for tied weights, say) keeps computing natively.

    Example:
        >>> model = convert_model(resnet, "mitchell7", exclude=["conv1", "fc"])
        >>> print(conversion_report(model))
    """
    _check_model(model, "convert_model")
    if quant is not None or isinstance(multiplier, IntMultiplier):
        return _convert_quantized(
            model, multiplier, quant, include, exclude, inplace, grad_input, grad_weight
        )
    passes = resolve_passes(multiplier, grad_input, grad_weight)
    selection = LayerSelection.parse(include, exclude)
    if not inplace:
        model = copy.deepcopy(model)
    unsupported: list[tuple[str, str]] = []

    def convert(module: nn.Module, name: str, chain: list[tuple[str, nn.Module]]) -> Any:
        kind = _classify(module)
        if kind == "convertible" and selection.selects(chain):
            return _CONVERSIONS[type(module)].from_float(module, passes)
        if kind == "approx" and isinstance(module, QuantModule) and selection.selects(chain):
            float_layer = module.to_float()
            return _CONVERSIONS[type(float_layer)].from_float(float_layer, passes)
        if kind == "approx" and selection.selects(chain):
            cast(ApproxModule, module).set_multiplier(passes)
            return module
        if kind == "unsupported" and selection.selects(chain):
            unsupported.append((name or "(model)", type(module).__name__))
        return module if isinstance(module, nn.MultiheadAttention) else None

    root = _rewrite(model, convert)
    _set_fast_paths(root, enabled=False)
    if unsupported:
        listed = ", ".join(f"{n} ({t})" for n, t in unsupported)
        warnings.warn(
            f"convert_model: {len(unsupported)} layer(s) multiply but have no approximate "
            f"version, so they still compute in native precision: {listed}. approxsim "
            "converts nn.Linear, nn.Conv1d, nn.Conv2d and nn.MultiheadAttention; replace "
            "these layers, or pass them in exclude= to acknowledge them and silence this "
            "warning (conversion_report(model) lists them too).",
            UnsupportedModuleWarning,
            stacklevel=2,
        )
    return root


def restore_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Swap every ``Approx*`` layer back to its plain torch layer (sharing Parameters).

    Also switches the transformer fast paths that :func:`convert_model` turned off back on.

    Args:
        model: A model holding approximate layers (or a single approximate layer).
        inplace: Swap inside ``model`` itself. Default: work on a deep copy.

    Returns:
        The restored model, whose ``state_dict`` equals the converted model's.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    _check_model(model, "restore_model")
    if not inplace:
        model = copy.deepcopy(model)
    root = _rewrite(
        model, lambda module, _, __: module.to_float() if isinstance(module, _CONVERTED) else None
    )
    _set_fast_paths(root, enabled=True)
    return root


def _convert_quantized(
    model: nn.Module,
    multiplier: Any,
    quant: QuantConfig | None,
    include: PatternArg,
    exclude: PatternArg,
    inplace: bool,
    grad_input: Any,
    grad_weight: Any,
) -> nn.Module:
    """The ``quant=`` path of :func:`convert_model` (same selection and sharing rules)."""
    mult = check_int_multiplier(multiplier, "convert_model(quant=...)")
    if grad_input is not None or grad_weight is not None:
        raise QuantError(
            "convert_model: grad_input/grad_weight name float multipliers and do not apply to "
            "quantized layers; choose their backward with QuantConfig(grad='ste' | 'lut')"
        )
    if quant is not None and not isinstance(quant, QuantConfig):
        raise QuantError(f"convert_model: quant must be a QuantConfig, got {quant!r}")
    config = quant or QuantConfig()
    config.resolve(mult)  # refuse a config that does not fit before copying the model
    selection = LayerSelection.parse(include, exclude)
    if not inplace:
        model = copy.deepcopy(model)
    unsupported: list[tuple[str, str]] = []

    def convert(module: nn.Module, name: str, chain: list[tuple[str, nn.Module]]) -> Any:
        kind = _classify(module)
        selected = kind in ("convertible", "approx") and selection.selects(chain)
        base = module.to_float() if selected and isinstance(module, _CONVERTED) else module
        target = _QUANT_CONVERSIONS.get(type(base)) if selected else None
        if target is not None and getattr(target, "supports", lambda m: True)(base):
            return target.from_float(base, mult, config)
        if selected or (kind == "unsupported" and selection.selects(chain)):
            unsupported.append((name or "(model)", type(module).__name__))
        return module if isinstance(module, nn.MultiheadAttention) else None

    root = _rewrite(model, convert)
    _set_fast_paths(root, enabled=False)
    if unsupported:
        listed = ", ".join(f"{n} ({t})" for n, t in unsupported)
        warnings.warn(
            f"convert_model(quant=...): {len(unsupported)} layer(s) multiply but have no "
            f"quantized version, so they keep their current arithmetic: {listed}. Quantized "
            "layers exist for nn.Linear, nn.Conv1d, nn.Conv2d and nn.MultiheadAttention (without "
            "add_bias_kv / add_zero_attn); pass these layers in "
            "exclude= to acknowledge them and silence this warning.",
            UnsupportedModuleWarning,
            stacklevel=3,
        )
    return root


# ---------------------------------------------------------------------------- fast paths
def _set_fast_paths(model: nn.Module, enabled: bool) -> None:
    """Turn torch's transformer fast paths off where they would bypass approximate layers
    (``enabled=False``), or restore the saved settings (``enabled=True``)."""
    for module in model.modules():
        if enabled:
            saved = module.__dict__.pop(_SAVED_FAST_PATH, None)
            for attr, value in (saved or {}).items():
                setattr(module, attr, value)
            continue
        if not any(isinstance(m, _CONVERTED) for m in module.modules()):
            continue
        attrs: dict[str, Any] = {}
        if hasattr(module, "activation_relu_or_gelu"):
            # Transformer{Encoder,Decoder}Layer: a falsy value fails the fast-path check
            # (the regular path uses self.activation, so nothing else changes).
            attrs["activation_relu_or_gelu"] = False
        if isinstance(module, nn.TransformerEncoder):
            attrs["enable_nested_tensor"] = False
            attrs["use_nested_tensor"] = False
        if attrs:
            saved = module.__dict__.setdefault(_SAVED_FAST_PATH, {})
            for attr, value in attrs.items():
                if hasattr(module, attr):
                    saved.setdefault(attr, getattr(module, attr))
                setattr(module, attr, value)


#: What :func:`_rewrite` asks of each module: its replacement (itself to keep it as it is),
#: or ``None`` to keep it and rewrite its children.
_Visit = Callable[[nn.Module, str, list[tuple[str, nn.Module]]], "nn.Module | None"]


def _rewrite(model: nn.Module, visit: _Visit) -> nn.Module:
    """Rebuild ``model``'s module tree in place: ``visit(module, name, chain)`` (qualified
    name, and the ``(name, module)`` chain from the root) says what replaces each module, or
    ``None`` to descend into it. A module used twice is visited once and replaced by the same
    object everywhere. Returns what replaces the root."""
    done: dict[int, nn.Module] = {}

    def walk(module: nn.Module, name: str, chain: list[tuple[str, nn.Module]]) -> nn.Module:
        if id(module) in done:
            return done[id(module)]
        chain = chain + [(name, module)]
        result = visit(module, name, chain)
        if result is None:
            result = module
            for child_name, child in _children(module):
                if child is None:
                    continue
                qual = f"{name}.{child_name}" if name else child_name
                new_child = walk(child, qual, chain)
                if new_child is not child:
                    setattr(module, child_name, new_child)
        done[id(module)] = result
        return result

    return walk(model, "", [])


def _children(module: nn.Module) -> list[tuple[str, nn.Module | None]]:
    """Direct children under every name, repeats included (``named_children`` drops a module
    registered twice, which would leave its second slot unconverted)."""
    return list(module._modules.items())


def _check_model(model: Any, fn: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn} expects an nn.Module, got {type(model).__name__}")
