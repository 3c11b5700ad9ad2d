"""The root of every error approxsim raises.

Every exception class approxsim defines derives from :class:`ApproxsimError`, so a library
user can catch "anything approxsim refused" in one ``except`` clause. Each subclass may also
keep a standard base (``ValueError`` for bad input, ``RuntimeError`` for a failed build,
``KeyError`` for an unknown name) so code written against those bases keeps working.

The command line prints any :class:`ApproxsimError` as one line and exits with status 2.
"""

from __future__ import annotations

__all__ = ["ApproxsimError", "DeviceError"]


class ApproxsimError(Exception):
    """Base class of every error approxsim raises on purpose (bad input, bad files, builds)."""


class DeviceError(ApproxsimError, ValueError):
    """A device was named that does not exist or cannot be used on this machine."""
