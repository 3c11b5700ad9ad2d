"""The errors of the training engine: a bad setting, a bad checkpoint, a diverged run, a
failed peer process."""

from __future__ import annotations

from approxsim.errors import ApproxsimError

__all__ = ["TrainError", "CheckpointError", "DivergedError", "PeerError"]


class TrainError(ApproxsimError, ValueError):
    """A training or evaluation setting that cannot run; the message says what to change."""


class CheckpointError(TrainError):
    """A checkpoint file is missing, damaged or not an approxsim checkpoint."""


class DivergedError(TrainError):
    """The training loss became NaN or infinite; the checkpoint of the last complete epoch
    is left as it was. ``allow_nonfinite=True`` (``--allow-nonfinite``) trains on instead."""


class PeerError(TrainError):
    """Raised on the processes of a multi-process run that did not fail themselves when
    another one did.

    The failing process reports its own error; the command line prints nothing for this one
    (``peer_failed``), so a failure shows up once, not once per process.
    """

    #: Tells the command line's error handler to exit with status 2 without a message.
    peer_failed = True
