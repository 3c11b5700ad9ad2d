"""The errors of the training engine: a bad setting, a bad checkpoint, a failed peer process."""

from __future__ import annotations

from approxsim.errors import ApproxsimError

__all__ = ["TrainError", "CheckpointError", "PeerError"]


class TrainError(ApproxsimError, ValueError):
    """A training or evaluation setting that cannot run; the message says what to change."""


class CheckpointError(TrainError):
    """A checkpoint file is missing, damaged or not an approxsim checkpoint."""


class PeerError(TrainError):
    """Raised on the processes of a multi-process run that did not fail themselves when
    another one did.

    The failing process reports its own error; the command line prints nothing for this one
    (``peer_failed``), so a failure shows up once, not once per process.
    """

    #: Tells the command line's error handler to exit with status 2 without a message.
    peer_failed = True
