"""Layer selection by name patterns or module types: the one rule every layer-choosing
function shares.

:func:`approxsim.convert_model` (which layers multiply approximately) and the CIM chip
(:func:`approxsim.cim.select_layers`: which layers are mapped to devices) both take
``include`` / ``exclude`` arguments of the same form and read them the same way:

* a pattern is an fnmatch pattern on a qualified module name (``"layer1.*"``, matched with
  :func:`fnmatch.fnmatchcase`) or an ``nn.Module`` type (``nn.Conv2d``, subclasses included);
  an argument is one pattern, a sequence of them, or ``None`` (no filter);
* a pattern selects the module it names and everything inside it (it matches when it names
  the module or any of its ancestors);
* exclude wins over include.

Each caller walks the model its own way (conversion replaces modules as it goes, the chip only
collects them) and asks :meth:`LayerSelection.selects` with the chain of ``(name, module)``
pairs from the root to the module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

__all__ = ["Pattern", "PatternArg", "Chain", "LayerSelection", "parse_patterns", "matches"]

#: One pattern: an fnmatch pattern on qualified module names, or an ``nn.Module`` type.
Pattern = str | type[nn.Module]
#: What ``include=`` / ``exclude=`` take: one pattern, several, or ``None`` (no filter).
PatternArg = Pattern | Sequence[Pattern] | None
#: ``(qualified name, module)`` from the model itself (name ``""``) down to one module.
Chain = Sequence[tuple[str, nn.Module]]


def parse_patterns(
    arg: PatternArg,
    what: str,
    *,
    error: type[Exception] = TypeError,
    example: str = "layer1.*",
) -> tuple[Pattern, ...] | None:
    """Check one ``include`` / ``exclude`` argument and return its patterns as a tuple.

    Args:
        arg: One pattern, a sequence of patterns, or ``None``.
        what: The argument's name, for the message (``"include"``).
        error: The exception class to raise (each caller keeps its own error type).
        example: A module-name pattern quoted in the message as an example.

    Returns:
        The patterns, or ``None`` when ``arg`` is ``None``.

    Raises:
        TypeError: (or ``error``) an item is neither a string nor an ``nn.Module`` type.
    """
    if arg is None:
        return None
    items: Sequence[Any] = (arg,) if isinstance(arg, (str, type)) else tuple(arg)
    for p in items:
        if not (isinstance(p, str) or (isinstance(p, type) and issubclass(p, nn.Module))):
            raise error(
                f"{what} takes fnmatch patterns on qualified module names (e.g. {example!r}), "
                f"nn.Module types (e.g. nn.Conv2d), or a list of them; got {p!r}"
            )
    return tuple(items)


def matches(patterns: Sequence[Pattern], chain: Chain) -> bool:
    """Whether a pattern names the module at the end of ``chain`` or one of its ancestors.

    Args:
        patterns: Name patterns and module types.
        chain: ``(qualified name, module)`` pairs from the root to the module.

    Returns:
        ``True`` when some pattern matches some link of the chain (by name or by type).
    """
    for p in patterns:
        for name, module in chain:
            if isinstance(p, str):
                if fnmatchcase(name, p):
                    return True
            elif isinstance(module, p):
                return True
    return False


@dataclass(frozen=True)
class LayerSelection:
    """Parsed ``include`` / ``exclude`` filters.

    Attributes:
        include: Select only what these patterns name; ``None``: everything.
        exclude: Never select what these name (wins over ``include``); ``None``: nothing.
    """

    include: tuple[Pattern, ...] | None = None
    exclude: tuple[Pattern, ...] | None = None

    @classmethod
    def parse(
        cls,
        include: PatternArg = None,
        exclude: PatternArg = None,
        *,
        error: type[Exception] = TypeError,
        example: str = "layer1.*",
    ) -> LayerSelection:
        """Check both filters (see :func:`parse_patterns`) and build a selection.

        Args:
            include: The ``include=`` argument.
            exclude: The ``exclude=`` argument.
            error: The exception class to raise for a bad pattern.
            example: A module-name pattern quoted in the message.

        Returns:
            The selection.

        Raises:
            TypeError: (or ``error``) a pattern of the wrong type.
        """
        return cls(
            parse_patterns(include, "include", error=error, example=example),
            parse_patterns(exclude, "exclude", error=error, example=example),
        )

    def selects(self, chain: Chain) -> bool:
        """Whether the module at the end of ``chain`` is selected.

        Args:
            chain: ``(qualified name, module)`` pairs from the root to the module.

        Returns:
            ``True`` unless an exclude pattern names it or an ancestor, or include patterns
            are given and none names it or an ancestor.
        """
        if self.exclude is not None and matches(self.exclude, chain):
            return False
        return self.include is None or matches(self.include, chain)
