"""The child process that times a benchmark's native baseline under one environment.

Started by :func:`approxsim.bench.native.time_native` as ``python -m
approxsim.bench._native_child TASK.json RESULT.json``: reads the task, times native torch for
every problem it lists (``native_timings`` of :mod:`approxsim.bench.ops` or
:mod:`approxsim.bench.models`) and writes the timings with this process's thread variables.
Progress lines go to stdout marked for the parent; an error ends the process with status 1 and
a one-line message, which the parent reports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from approxsim.bench.native import PROGRESS_MARK


def _say(line: str) -> None:
    print(PROGRESS_MARK + line, flush=True)


def run(task: dict[str, Any]) -> dict[str, Any]:
    """Time the native baseline a task describes, in this process.

    Args:
        task: ``{"bench": "ops" | "models", ...}`` (see the two ``native_timings``).

    Returns:
        ``{"environment", "torch_threads", "results"}``.
    """
    import torch

    from approxsim._runtime import thread_environment

    if task.get("bench") == "ops":
        from approxsim.bench.ops import native_timings
    elif task.get("bench") == "models":
        from approxsim.bench.models import native_timings  # type: ignore[assignment]
    else:
        raise ValueError(f"unknown benchmark {task.get('bench')!r} in the task file")
    results = native_timings(task, _say)
    return {
        "environment": thread_environment(),
        "torch_threads": torch.get_num_threads(),
        "results": results,
    }


def main(argv: list[str]) -> int:
    """Read the task file, time, write the result file; the exit status."""
    from approxsim._io import atomic_write_json

    if len(argv) != 2:
        print("usage: python -m approxsim.bench._native_child TASK.json RESULT.json")
        return 2
    try:
        task = json.loads(Path(argv[0]).read_text())
        atomic_write_json(argv[1], run(task), overwrite=True)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        print(f"{type(exc).__name__}: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
