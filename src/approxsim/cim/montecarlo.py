"""Monte Carlo over chips: the accuracy distribution under device-to-device variation.

Chip ``i`` of a run with seed ``seed`` draws its deviations from a generator seeded with a
hash of ``(seed, i)`` only, so the first ``k`` chips of a 100-chip run are the chips of a
``k``-chip run, and an interrupted run continues exactly (``previous=``).

Two levels:

* :func:`monte_carlo` scores the chips in memory and returns a :class:`MonteCarloResult`;
* :func:`run_monte_carlo` is the resumable run behind ``approxsim cim mc``: it keeps a result
  file up to date after every chip (schema ``approxsim.cim.mc/1``), continues a partial file
  with ``resume=True`` (refusing one made with other settings), can save the worst chip for
  replay, and on Ctrl-C returns what is complete instead of losing it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from approxsim._io import OutputExistsError, atomic_write_json, check_output, stale_temporaries
from approxsim._runtime import ProgressFactory, ProgressLike
from approxsim.cim.chip import PatternArg, Perturbation, chip, sample_perturbation, select_layers
from approxsim.cim.device import CIMError, DeviceConfig
from approxsim.cim.evaluation import DataLike, accuracy, num_samples
from approxsim.cim.stats import summarize

__all__ = [
    "MC_SCHEMA",
    "MonteCarloResult",
    "MonteCarloRun",
    "monte_carlo",
    "run_monte_carlo",
    "chip_seed",
    "read_result",
]

#: Schema of the result file :func:`run_monte_carlo` writes.
MC_SCHEMA = "approxsim.cim.mc/1"


def chip_seed(seed: int, index: int, stream: str = "devices") -> int:
    """The generator seed of chip ``index`` of a run seeded ``seed`` (one stream per use)."""
    digest = hashlib.sha256(f"approxsim.cim/{seed}/{index}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class MonteCarloResult:
    """Accuracies of sampled chips and their summary.

    Attributes:
        config: The device model sampled.
        seed: The run's seed.
        accuracies: Accuracy of chip ``i`` at index ``i``.
        summary: :func:`approxsim.cim.stats.summarize` of ``accuracies``.
        clean_accuracy: Accuracy of the chip without variation (quantized weights).
        samples: Number of data samples each chip was scored on.
        layers: Names of the mapped layers.
        seconds: Wall time.
        worst_index: Index of the worst chip.
    """

    config: DeviceConfig
    seed: int
    accuracies: list[float]
    summary: dict[str, Any]
    clean_accuracy: float
    samples: int
    layers: list[str]
    seconds: float
    worst_index: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {
            "device": self.config.to_dict(),
            "seed": self.seed,
            "chips": len(self.accuracies),
            "data_samples": self.samples,
            "clean_accuracy": self.clean_accuracy,
            "summary": self.summary,
            "worst_chip": self.worst_index,
            "accuracies": self.accuracies,
            "layers": self.layers,
            "seconds": round(self.seconds, 3),
            **self.extra,
        }


def monte_carlo(
    model: nn.Module,
    data: DataLike,
    config: DeviceConfig,
    *,
    samples: int = 100,
    seed: int = 0,
    include: PatternArg = None,
    exclude: PatternArg = None,
    batch_size: int = 1000,
    confidence: float = 0.95,
    previous: Sequence[float] = (),
    on_chip: Callable[[int, float], None] | None = None,
    progress: ProgressLike | None = None,
) -> MonteCarloResult:
    """Score ``samples`` chips drawn from ``config`` on ``data``.

    Args:
        model: The trained model (plain, or converted to approximate layers).
        data: Dataset or ``(images, labels)`` to score each chip on.
        config: The device model (``sigma``, write-verify, read noise).
        samples: Number of chips ``S``.
        seed: Seed of the run; chip ``i`` depends on ``(seed, i)`` only.
        include: Layers to map (as :func:`~approxsim.cim.select_layers`).
        exclude: Layers to keep digital.
        batch_size: Samples per forward pass.
        confidence: Coverage of the intervals in the summary.
        previous: Accuracies of chips ``0..k-1`` from an interrupted run with the same
            settings; scoring resumes at chip ``k``.
        on_chip: Called with ``(index, accuracy)`` after each chip (to save progress).
        progress: An object with ``update(n)`` counting scored images, or ``None``.

    Returns:
        A :class:`MonteCarloResult`.

    Raises:
        CIMError: invalid arguments or a model whose mapped layers never run.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise CIMError(f"samples must be an integer >= 1, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CIMError(f"seed must be an integer >= 0, got {seed!r}")
    if len(previous) > samples:
        raise CIMError(f"{len(previous)} chips are already done, more than samples={samples}")
    t0 = time.perf_counter()
    layers = select_layers(model, include, exclude)
    n = num_samples(data)
    with chip(model, config=config, include=include, exclude=exclude, read_seed=seed) as h:
        clean = accuracy(model, data, batch_size=batch_size)
        h.check_called()
    accs = [float(a) for a in previous]
    for i in range(len(accs), samples):
        pert: Perturbation = sample_perturbation(
            model, config, seed=chip_seed(seed, i), include=include, exclude=exclude
        )
        with chip(model, pert, config=config, read_seed=chip_seed(seed, i, "reads")):
            acc = accuracy(model, data, batch_size=batch_size, progress=progress)
        accs.append(acc)
        if on_chip is not None:
            on_chip(i, acc)
    worst = min(range(len(accs)), key=accs.__getitem__)
    return MonteCarloResult(
        config=config,
        seed=seed,
        accuracies=accs,
        summary=summarize(accs, confidence=confidence, seed=seed),
        clean_accuracy=clean,
        samples=n,
        layers=list(layers),
        seconds=time.perf_counter() - t0,
        worst_index=worst,
    )


# ---------------------------------------------------------------------------- resumable runs
@dataclass
class MonteCarloRun:
    """What :func:`run_monte_carlo` did.

    Attributes:
        document: The result document (what the result file holds): the run's settings,
            ``accuracies`` of the chips done and ``complete``; once complete also
            :meth:`MonteCarloResult.to_dict`'s fields and, with ``save_worst``,
            ``worst_chip_file``.
        result: The finished run; ``None`` when it was interrupted.
    """

    document: dict[str, Any]
    result: MonteCarloResult | None

    @property
    def complete(self) -> bool:
        """Whether every chip was scored (``False``: interrupted, resumable)."""
        return self.result is not None

    @property
    def chips_done(self) -> int:
        """Number of chips scored so far, resumed ones included."""
        return len(self.document["accuracies"])


def read_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON result file to continue it (a Monte Carlo run, a sweep).

    Args:
        path: The file.

    Returns:
        Its JSON object.

    Raises:
        CIMError: the file cannot be read, is not JSON, or is not a JSON object.
    """
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CIMError(f"cannot read {path} to resume it: {exc}") from None
    if not isinstance(obj, dict):
        raise CIMError(f"{path} is not a result file")
    return obj


def _recorded(patterns: PatternArg) -> list[str] | None:
    """Layer patterns as the result file records them: a list of strings (types by name)."""
    if patterns is None:
        return None
    items = [patterns] if isinstance(patterns, (str, type)) else list(patterns)
    return [p if isinstance(p, str) else f"{p.__module__}.{p.__qualname__}" for p in items]


def _resumed_chips(
    out: str | os.PathLike[str] | None, resume: bool, settings: Mapping[str, Any], samples: int
) -> tuple[list[float], dict[str, Any]]:
    """Accuracies of the chips a partial result file already holds (``[]`` for a new run),
    and the file's document (``{}`` for a new run)."""
    if not resume:
        return [], {}
    if out is None:
        raise CIMError("resume=True needs out= (the result file to continue)")
    if not Path(out).exists():
        return [], {}
    old = read_result(out)
    # The epoch is left out: a checkpoint rewritten by a resumed training run is the same one.
    diffs = [k for k in settings if k != "epoch" and old.get(k) != settings[k]]
    if diffs:
        raise CIMError(f"cannot resume {out}: settings differ in {diffs}")
    accs = old.get("accuracies", [])
    if not isinstance(accs, list) or not all(
        isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 1 for a in accs
    ):
        raise CIMError(
            f"cannot resume {out}: its accuracies are not a list of numbers in [0, 1] (the "
            "file was altered); start a new run with --overwrite or another --out"
        )
    return [float(a) for a in accs[:samples]], old


#: How a refusal names the options that allow replacing a result file.
_OUT_FLAG = "--resume (to continue that run) or --overwrite"


def _prepare_outputs(
    out: str | os.PathLike[str] | None,
    save_worst: str | os.PathLike[str] | None,
    overwrite: bool,
    resume: bool,
    settings: Mapping[str, Any],
    inputs: list[str | os.PathLike[str] | None],
    samples: int,
) -> tuple[list[float], bool]:
    """Apply the output rule to the result and worst-chip files before any chip is scored,
    read the chips to resume, and remove temporaries a killed run left.

    Returns:
        The resumed chips' accuracies, and whether the worst-chip file may be replaced.
    """
    if out is not None:  # before reading it to resume: a checkpoint is no result file
        check_output(out, overwrite=True, inputs=inputs)
    previous, old = _resumed_chips(out, resume, settings, samples)
    replace_worst = _check_outputs(out, save_worst, overwrite, resume, old, inputs)
    for target in (out, save_worst):
        # Temporary files of a run killed while writing this output (kill -9 mid-write).
        if target is not None:
            for tmp in stale_temporaries(Path(target).parent, [Path(target).name]):
                tmp.unlink(missing_ok=True)
    return previous, replace_worst


def _check_outputs(
    out: str | os.PathLike[str] | None,
    save_worst: str | os.PathLike[str] | None,
    overwrite: bool,
    resume: bool,
    old: Mapping[str, Any],
    inputs: list[str | os.PathLike[str] | None],
) -> bool:
    """The output rule for the result and worst-chip files; whether the latter may be
    replaced."""
    if out is not None:
        check_output(out, overwrite=overwrite or resume, inputs=inputs, flag=_OUT_FLAG)
    if save_worst is None:
        return False
    if out is not None and Path(save_worst).absolute() == Path(out).absolute():
        raise OutputExistsError(
            f"the result file and the worst-chip file are the same ({out}); name two files"
        )
    # A resumed run may replace the worst chip it saved itself (recorded in its result file).
    own = resume and old.get("worst_chip_file") == str(save_worst)
    check_output(save_worst, overwrite=overwrite or own, inputs=[*inputs, out])
    return overwrite or own


def run_monte_carlo(
    model: nn.Module,
    data: DataLike,
    config: DeviceConfig,
    *,
    samples: int = 100,
    seed: int = 0,
    include: PatternArg = None,
    exclude: PatternArg = None,
    batch_size: int = 1000,
    confidence: float = 0.95,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    save_worst: str | os.PathLike[str] | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: ProgressFactory | None = None,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> MonteCarloRun:
    """A resumable Monte Carlo run: :func:`monte_carlo` plus its result file.

    The document starts with ``schema``, the fields of ``meta`` (what the model and data
    are: checkpoint, epoch, data split ...), ``device``, ``seed``, ``include`` and
    ``exclude``; these are the run's settings. With ``out`` it is written (atomically) after
    every chip with ``complete: false`` and once more at the end with the summary and
    ``complete: true``. ``resume=True`` continues the chips of an existing ``out`` with the
    same settings (the file of a finished run too: asking for more ``samples`` extends it).
    Ctrl-C while chips are scored keeps the completed chips (in ``out`` and in the returned
    document) and returns an incomplete :class:`MonteCarloRun`.

    Outputs follow the one rule, checked before any chip is scored: an existing ``out`` is
    replaced only with ``overwrite`` (continued with ``resume``), an existing ``save_worst``
    only with ``overwrite`` (or if a resumed run saved it), and neither may be an input.

    Args:
        model: The trained model (plain, or converted to approximate layers).
        data: Dataset or ``(images, labels)`` to score each chip on.
        config: The device model (``sigma``, write-verify, read noise, ``clip``).
        samples: Number of chips.
        seed: Seed of the run; chip ``i`` depends on ``(seed, i)`` only.
        include: Layers to map (as :func:`~approxsim.cim.select_layers`).
        exclude: Layers to keep digital.
        batch_size: Samples per forward pass.
        confidence: Coverage of the intervals in the summary.
        out: Result file kept up to date (JSON); ``None``: none.
        resume: Continue the run in ``out`` (which may not exist yet).
        save_worst: Save the worst chip's :class:`~approxsim.cim.Perturbation` here (replay
            it with :func:`~approxsim.cim.chip`); recorded as ``worst_chip_file``.
        meta: Fields describing the model and data, stored and compared on resume.
        progress: Makes the progress report of the chips still to score (counting images).
        overwrite: Replace an existing ``out`` and ``save_worst`` (a new run).
        inputs: Files the model and data were read from; no output may be one of them.

    Returns:
        A :class:`MonteCarloRun`; ``run.complete`` is ``False`` after Ctrl-C.

    Raises:
        CIMError: invalid arguments, ``resume`` without ``out``, or an ``out`` made with
            other settings or unreadable.
        OutputExistsError: an output breaks the rule above.
        OSError: a result file cannot be written.
    """
    settings = {
        "schema": MC_SCHEMA,
        **(meta or {}),
        "device": config.to_dict(),
        "seed": seed,
        "include": _recorded(include),
        "exclude": _recorded(exclude),
    }
    ins = list(inputs)
    previous, replace_worst = _prepare_outputs(
        out, save_worst, overwrite, resume, settings, ins, samples
    )
    partial = dict(settings, accuracies=list(previous), complete=False)
    # The first write applies the rule again (a file that appeared meanwhile is not
    # clobbered); later ones replace this run's own file.
    replace_out = [overwrite or resume]

    def write_out(doc: dict[str, Any]) -> None:
        if out is not None:
            atomic_write_json(out, doc, overwrite=replace_out[0], inputs=ins, flag=_OUT_FLAG)
            replace_out[0] = True

    def saved(i: int, acc: float) -> None:
        partial["accuracies"].append(acc)
        write_out(partial)

    total = (samples - len(previous)) * num_samples(data)
    bar = progress("monte carlo", total) if progress is not None else None
    try:
        res = monte_carlo(
            model,
            data,
            config,
            samples=samples,
            seed=seed,
            include=include,
            exclude=exclude,
            batch_size=batch_size,
            confidence=confidence,
            previous=previous,
            on_chip=saved,
            progress=bar,
        )
    except KeyboardInterrupt:
        return MonteCarloRun(partial, None)
    finally:
        if bar is not None:
            bar.close()
    doc = {**settings, **res.to_dict(), "complete": True}
    if save_worst is not None:
        worst = sample_perturbation(
            model, config, seed=chip_seed(seed, res.worst_index), include=include, exclude=exclude
        )
        worst.meta.update(chip=res.worst_index, accuracy=res.accuracies[res.worst_index])
        saved_to = worst.save(save_worst, overwrite=replace_worst, inputs=[*ins, out])
        doc["worst_chip_file"] = str(saved_to)
    write_out(doc)
    return MonteCarloRun(doc, res)
