"""Helpers of the training tests: settings of the shared tiny runs and metrics readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from approxsim.training import TrainConfig

N_TRAIN, N_TEST = 64, 32
TIMING_KEYS = ("seconds", "samples_per_s")


def make_config(out: Path, data_dir: Path, **kw: Any) -> TrainConfig:
    """The tests' small settings, overridden by ``kw``."""
    settings: dict[str, Any] = {
        "model": "lenet5",
        "dataset": "fashion-mnist",
        "data_dir": data_dir,
        "epochs": 2,
        "batch_size": 32,
        "progress": False,
        "threads": 2,
    }
    settings.update(kw)
    return TrainConfig(out, **settings)


def approx_settings() -> dict[str, Any]:
    """The approximate run's settings besides :func:`make_config`'s."""
    return {"multiplier": "mitchell7", "schedule": "cosine", "lr": 0.05}


def metrics(out: Path) -> list[dict[str, Any]]:
    """The records of ``out/metrics.jsonl``."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def without_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without the fields that depend on the machine's speed."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]
