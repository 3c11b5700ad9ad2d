"""``approxsim bench epoch``: whole training epochs end to end, float32 against a multiplier.

Each run is ``approxsim train`` itself, in a child process, on a real dataset (Fashion-MNIST by
default): the float32 model once per native setting (:mod:`approxsim.bench.native`; the
fastest is kept) and the approximate model once, in the environment this command was started
in (the default a user gets, unless they set thread variables). An epoch's wall time is the
``seconds`` field of the run's ``metrics.jsonl`` — training and the test-set evaluation of the
epoch, as ``approxsim train`` prints it — and the training throughput its ``samples_per_s``.
Starting the process and loading the dataset are not counted. Run folders go to a temporary
folder and are removed; the result keeps every epoch record.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from approxsim._runtime import THREAD_VARIABLES, describe_environment, machine_record
from approxsim._text import text_table
from approxsim.bench.common import BenchError
from approxsim.bench.native import (
    AS_SET,
    child_environment,
    protocol_line,
    resolve_native_settings,
    run_child,
    setting_label,
    short_label,
)

__all__ = ["SCHEMA", "bench_epoch", "format_epoch_table"]

#: Identifies the layout of the result dictionary (and of the JSON file written from it).
SCHEMA = "approxsim.bench.epoch/1"

#: The name the float32 runs train with.
EXACT = "fp32"


def _train_argv(
    multiplier: str, out: Path, options: dict[str, Any], threads: int | None
) -> list[str]:
    """``python -m approxsim train ...`` for one run."""
    argv = [sys.executable, "-m", "approxsim", "train", "--multiplier", multiplier]
    argv += ["--out", str(out), "--no-progress"]
    for key, value in options.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    return argv


def _run_record(out: Path) -> dict[str, Any]:
    """A finished run's epochs: their records and the median epoch and training times."""
    from approxsim.training.rundir import read_metrics

    epochs = [r for r in read_metrics(out) if "seconds" in r and "samples_per_s" in r]
    if not epochs:
        raise BenchError(f"the training run in {out} wrote no epoch record")
    return {
        "epoch_s": statistics.median(r["seconds"] for r in epochs),
        "train_samples_per_s": statistics.median(r["samples_per_s"] for r in epochs),
        "test_acc": epochs[-1].get("test_acc"),
        "epochs": epochs,
    }


def _check(model: str, dataset: str, multiplier: str, epochs: int, threads: int | None) -> str:
    """Refuse what ``train`` would refuse, before any run starts; the multiplier's name."""
    from approxsim.data import list_datasets
    from approxsim.models import list_models
    from approxsim.multipliers import get_multiplier

    if model not in list_models():
        raise BenchError(f"unknown model {model!r}; known: {', '.join(list_models())}")
    if dataset not in list_datasets():
        raise BenchError(f"unknown dataset {dataset!r}; known: {', '.join(list_datasets())}")
    if not isinstance(epochs, int) or epochs < 1:
        raise BenchError(f"epochs must be an int >= 1, got {epochs!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise BenchError(f"threads must be an int >= 1, got {threads!r}")
    mult = get_multiplier(multiplier)
    if mult.name == EXACT:
        raise BenchError(f"--multiplier {EXACT} would time float32 against itself; name another")
    return mult.name


def bench_epoch(
    model: str = "lenet5",
    multiplier: str = "mitchell7",
    dataset: str = "fashion-mnist",
    *,
    epochs: int = 1,
    batch_size: int | None = None,
    data_dir: str | None = None,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    threads: int | None = None,
    native_settings: str | Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``epochs`` epochs in float32 and with ``multiplier``; time epochs.

    Args:
        model: A registered model.
        multiplier: The approximate multiplier (every linear and convolution layer).
        dataset: A registered dataset (``approxsim train --dataset``).
        epochs: Epochs per run; each run's epoch time is the median of its epochs.
        batch_size: ``train --batch-size`` (default: the model's).
        data_dir: ``train --data-dir`` (default: where ``train`` looks).
        max_train_samples: ``train --max-train-samples`` (default: all).
        max_test_samples: ``train --max-test-samples`` (default: all).
        threads: ``train --threads`` for every run (default: torch's own choice in each).
        native_settings: Where float32 is timed: child settings of
            :mod:`approxsim.bench.native` (``same-process`` does not apply: every run is a
            child); default: the three wait policies, or the environment's own.
        progress: Called with a line per step (the runs' own output included).
        argv: Command line for the machine record; default ``sys.argv``.

    Returns:
        ``{"schema", "machine", "config", "native": {setting: run}, "native_setting",
        "approx": run, "slowdown", "train_slowdown"}``; a run has ``epoch_s`` (median epoch
        seconds, training plus test evaluation), ``train_samples_per_s``, ``test_acc``,
        ``epochs`` (the metrics records) and ``environment`` (its thread variables);
        ``slowdown`` = approximate epoch time / the fastest float32 epoch time,
        ``train_slowdown`` the same for training throughput.

    Raises:
        BenchError: an unknown model, dataset or native setting, bad counts, a run that
            wrote no epoch; MultiplierError: an unknown multiplier; NativeBaselineError: a
            training run failed (its last line of output says why).
    """
    settings = resolve_native_settings(native_settings, same_process=False)
    name = _check(model, dataset, multiplier, epochs, threads)
    say = progress or (lambda _line: None)
    options = {
        "model": model,
        "dataset": dataset,
        "epochs": epochs,
        "batch_size": batch_size,
        "data_dir": data_dir,
        "max_train_samples": max_train_samples,
        "max_test_samples": max_test_samples,
        "seed": 0,
    }
    started = time.perf_counter()
    native: dict[str, dict[str, Any]] = {}
    approx: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="approxsim-bench-epoch-") as tmp:
        runs = [(EXACT, s) for s in settings] + [(name, AS_SET)]
        for i, (mult, setting) in enumerate(runs, 1):
            env = child_environment(setting)
            where = setting_label(setting) if mult == EXACT else "this environment"
            label = f"[{i}/{len(runs)}] {mult} ({where})"
            out = Path(tmp) / f"run{i}"
            say(f"{label}: approxsim train")
            run_child(_train_argv(mult, out, options, threads), env, label, say, forward_all=True)
            record = _run_record(out)
            record["environment"] = {k: env[k] for k in THREAD_VARIABLES if k in env}
            if mult == EXACT:
                native[setting] = record
            else:
                approx = record
    best = min(native, key=lambda s: native[s]["epoch_s"])
    return {
        "schema": SCHEMA,
        "machine": machine_record("cpu", argv),
        "config": {**options, "multiplier": name, "threads": threads or torch.get_num_threads()},
        "native_settings": list(settings),
        "native": native,
        "native_setting": best,
        "approx": approx,
        "slowdown": approx["epoch_s"] / native[best]["epoch_s"],
        "train_slowdown": native[best]["train_samples_per_s"] / approx["train_samples_per_s"],
        "elapsed_s": time.perf_counter() - started,
    }


def format_epoch_table(result: dict[str, Any]) -> str:
    """A text table of :func:`bench_epoch`'s result.

    Args:
        result: What :func:`bench_epoch` returned (or its JSON file, loaded).

    Returns:
        A title line, one row per run and the slowdown, as one string.
    """
    cfg, mach = result["config"], result["machine"]
    header = ("run", "environment", "epoch s", "train img/s", "test acc", "")
    rows = []
    for setting, run in result["native"].items():
        mark = "best" if setting == result["native_setting"] else ""
        rows.append(_epoch_row(EXACT, short_label(setting), run, mark))
    approx_env = describe_environment({"environment": result["approx"]["environment"]})
    rows.append(_epoch_row(cfg["multiplier"], approx_env, result["approx"], ""))
    title = (
        f"approxsim bench epoch: {cfg['model']} on {cfg['dataset']}, {cfg['epochs']} epoch(s) per "
        f"run (median), {mach['cpu']}, {cfg['threads']} threads; "
        + protocol_line(result["native_settings"], mach)
    )
    lines = [title, *text_table(header, rows, left=2)]
    lines.append(
        f"slowdown {cfg['multiplier']} / fp32 at its best: {result['slowdown']:.1f}x per epoch "
        f"(training and test evaluation), {result['train_slowdown']:.1f}x in training img/s"
    )
    return "\n".join(lines)


def _epoch_row(name: str, env: str, run: dict[str, Any], mark: str) -> tuple[str, ...]:
    acc = run.get("test_acc")
    return (
        name,
        env,
        f"{run['epoch_s']:.2f}",
        f"{run['train_samples_per_s']:.0f}",
        "–" if acc is None else f"{100 * acc:.2f}%",
        mark,
    )
