"""``python -m approxsim``: the ``approxsim`` command (also ``torchrun ... -m approxsim train``)."""

from __future__ import annotations

import sys

from approxsim.cli import main

if __name__ == "__main__":
    sys.exit(main())
