"""Old home of the multiplier command-line options; they live in :mod:`approxsim.cli.common`.

Kept so that code importing ``approxsim.multipliers.cliargs`` keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_multiplier_arguments", "multiplier_from_args"]  # noqa: F822 (lazy)


def __getattr__(name: str) -> Any:
    # Imported lazily: the multipliers package must not depend on the CLI at import time.
    if name in __all__:
        from approxsim.cli import common

        return getattr(common, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
