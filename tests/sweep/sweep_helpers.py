"""Helpers of the sweep tests: a tiny train spec, run folders written by hand, and the
metrics of a run without the fields that depend on the machine's speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from approxsim.sweep import SweepSpec, parse_spec
from approxsim.training.rundir import write_config, write_metrics

N_TRAIN, N_TEST = 64, 32
TIMING_KEYS = ("seconds", "samples_per_s")


def tiny_spec(data_dir: Path, **axes: list[Any]) -> SweepSpec:
    """A ``train`` sweep of LeNet-300-100 on the tiny dataset (2 epochs of 64 images)."""
    return parse_spec(
        {
            "command": "train",
            "name": "{multiplier}-s{seed}",
            "args": {
                "model": "lenet300100",
                "dataset": "fashion-mnist",
                "data_dir": str(data_dir),
                "epochs": 2,
                "batch_size": 32,
            },
            "axes": axes or {"seed": [0], "multiplier": ["fp32", "mitchell7"]},
        }
    )


def fake_run(folder: Path, accs: list[float], *, multiplier: str = "fp32", seed: int = 0) -> None:
    """A complete run folder written by hand: ``config.json`` and one metrics record per
    accuracy in ``accs`` (epochs = ``len(accs)``)."""
    folder.mkdir(parents=True, exist_ok=True)
    mult = {"name": multiplier}
    write_config(
        folder,
        {
            "config": {"model": "lenet300100", "epochs": len(accs), "seed": seed},
            "multipliers": {"forward": mult, "grad_input": mult, "grad_weight": mult},
        },
    )
    write_metrics(
        folder, [{"epoch": i + 1, "test_acc": a, "train_loss": 1.0} for i, a in enumerate(accs)]
    )


def metrics(folder: Path) -> list[dict[str, Any]]:
    """The records of ``folder/metrics.jsonl`` without timing fields."""
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k not in TIMING_KEYS} for ln in lines]
