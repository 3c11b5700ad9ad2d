"""The training loop (:func:`train`) and checkpoint evaluation (:func:`evaluate`).

:func:`train` reads as the list of its steps: join the processes, open the run folder
(resume or start), build data, model and optimizer, restore the checkpoint or write the new
run's files, then per epoch train, evaluate, sum over the processes, append the record and
save the checkpoint. Data order depends only on ``(seed, epoch)`` and every RNG is restored
on resume, so on the CPU a resumed run gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from approxsim._runtime import (
    Progress,
    ProgressLike,
    environment,
    resolve_device,
    say,
    seed_everything,
    thread_settings,
    utc_now,
)
from approxsim.data import ImageDataset
from approxsim.models import model_info
from approxsim.multipliers import MultiplierLike
from approxsim.multipliers.integer import IntMultiplier
from approxsim.nn.quant import QuantConfig
from approxsim.ops import PassMultipliers
from approxsim.training import rundir
from approxsim.training.build import (
    build_model,
    describe_multipliers,
    load_data,
    make_optimizer,
    make_scheduler,
    multiplier_fingerprints,
)
from approxsim.training.checkpoint import (
    check_restartable,
    check_resumable,
    checkpoint_state,
    load_checkpoint,
    load_trained,
    restore_training_state,
    save_checkpoint,
)
from approxsim.training.config import (
    ResolvedTrainConfig,
    TrainConfig,
    check_int,
    check_multiplier,
)
from approxsim.training.errors import DivergedError, PeerError, TrainError
from approxsim.training.extension import TrainExtension
from approxsim.training.init_from import load_init_weights
from approxsim.training.processes import World, setup_world, shard_batches, shard_span
from approxsim.training.quantized import (
    prepare_quantized_run,
    quantize_trained,
    resolve_quantized,
)

__all__ = ["train", "evaluate", "EVAL_SCHEMA", "epoch_line", "format_loss"]

EVAL_SCHEMA = "approxsim.eval/1"

_ForwardHook = Callable[[nn.Module, Tensor, Tensor], contextlib.AbstractContextManager[object]]


# ---------------------------------------------------------------------------- train
def train(config: TrainConfig, extension: TrainExtension | None = None) -> dict[str, Any]:
    """Train ``config.model`` on ``config.dataset`` with the configured multipliers.

    Seeds every RNG, builds the model, converts its linear and convolution layers with
    :func:`approxsim.convert.convert_model` (unless all three passes are ``fp32``), trains
    with SGD+momentum or Adam and an optional cosine schedule, evaluates on the test split
    after each epoch (with the same approximate forward pass), and writes ``config.json``,
    ``metrics.jsonl`` and ``checkpoint.pt`` in ``config.out_dir``
    (:mod:`approxsim.training.rundir`).

    Under ``torchrun`` (``WORLD_SIZE`` > 1), or inside a process group the caller has
    initialized, every process runs this function: the converted model is wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`, ``batch_size`` is the global batch
    (each process takes its contiguous part of every batch of the single-process order), the
    test set is split across the processes, the epoch metrics are summed over them, and only
    rank 0 writes files and progress output. All processes load the checkpoint on resume. A
    process group this function created is destroyed when it returns or fails.

    Interrupting (Ctrl-C) leaves the checkpoint of the last complete epoch intact; the
    ``KeyboardInterrupt`` propagates after a note on stderr.

    Args:
        config: The run's settings.
        extension: Another training method on this machinery (:class:`TrainExtension`).

    Returns:
        A summary: ``out_dir``, ``model``, ``dataset``, ``multipliers`` (names per pass),
        ``epochs``, ``epochs_completed``, ``resumed_from`` (epoch or ``None``), ``final``
        (last epoch's record), ``best_test_acc``, ``best_epoch``, ``history`` (all records),
        ``seconds`` (this call's wall time), ``world_size`` and ``rank`` (1 and 0 for a
        single process).

    Raises:
        TrainError: a non-empty ``out_dir`` without ``resume``/``overwrite``, settings that
            differ from the checkpoint being resumed (or, without a checkpoint, from the
            folder's ``config.json``; or finished epochs no checkpoint can continue), a model
            that does not fit the data, a multi-process launch that cannot start
            (:class:`PeerError` on the processes whose peer failed).
        CheckpointError: the checkpoint to resume from is damaged, or its contents do not
            fit the run.
        DivergedError: the training loss became NaN or infinite (unless
            ``allow_nonfinite``); the last complete epoch's checkpoint stays.
        DatasetError, ModelError, MultiplierError: data, model or multiplier problems (found
            before an old run is replaced with ``overwrite``).
    """
    start_time = time.perf_counter()
    cfg = config.resolve()
    world, device = setup_world(cfg.device)
    try:
        if extension is not None and world.enabled:
            raise TrainError(f"{extension.label} training runs in a single process only")
        state = _open_run(cfg, world, extension)
        with thread_settings(cfg.threads):
            with world.shared_errors():
                run = _build_run(cfg, world, device, extension, fresh=state is None)
                start_epoch = _start_run(run, state)
            _train_epochs(run, start_epoch)
        return _summary(run, state, start_epoch, start_time)
    except BaseException as exc:
        if world.enabled:
            # The failed frames still hold the DistributedDataParallel wrapper; freed after
            # the process group below, it aborts the process at exit.
            traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        world.close()


@dataclass
class _Run:
    """Everything one training run works with once it is built."""

    cfg: ResolvedTrainConfig
    world: World
    device: torch.device
    ext: TrainExtension | None
    passes: PassMultipliers
    train_set: ImageDataset
    test_set: ImageDataset
    model: nn.Module
    converted: list[dict[str, str]]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    ext_meta: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out_dir)

    @property
    def verbose(self) -> bool:
        """Progress output: asked for, and this is the process that prints."""
        return self.cfg.progress and self.world.is_main


def _open_run(
    cfg: ResolvedTrainConfig, world: World, ext: TrainExtension | None
) -> dict[str, Any] | None:
    """The checkpoint to resume from (checked against ``cfg``), or ``None`` for a fresh run,
    whose folder rank 0 checks here and clears only once the run is built
    (:func:`_start_run`), so a bad setting found on the way leaves an old run intact. Every
    process reads the checkpoint; only rank 0 touches the folder."""
    out = Path(cfg.out_dir)
    ckpt_path = out / rundir.CHECKPOINT_FILE
    state: dict[str, Any] | None = None
    with world.shared_errors():
        if cfg.resume and ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
            check_resumable(state, cfg, out)
            if ext is not None and state.get(ext.section) != ext.settings():
                raise TrainError(
                    f"cannot resume the run in {out}: it was trained with {ext.label} "
                    f"settings {state.get(ext.section)}, now {ext.settings()}; pass the same "
                    "settings or --overwrite"
                )
        elif world.is_main:
            rundir.check_run_folder(out, resume=cfg.resume, overwrite=cfg.overwrite)
            if cfg.resume and out.is_dir():
                # No checkpoint: the folder's files may only be the start of this very run.
                check_restartable(
                    rundir.read_config(out),
                    rundir.read_metrics(out),
                    cfg,
                    out,
                    None if ext is None else (ext.section, ext.settings()),
                )
    return state


def _build_run(
    cfg: ResolvedTrainConfig,
    world: World,
    device: torch.device,
    ext: TrainExtension | None,
    *,
    fresh: bool,
) -> _Run:
    """Load the data, seed every RNG, build and convert the model, make the optimizer."""
    passes = cfg.passes()
    if ext is not None and cfg.int_multiplier is not None:
        raise TrainError(
            f"{ext.label} training takes float multipliers only; quantization-aware training "
            "with an integer multiplier is approxsim train --int-multiplier ..."
        )
    train_set = load_data(cfg.dataset, cfg.data_dir, "train", cfg.max_train_samples)
    test_set = load_data(cfg.dataset, cfg.data_dir, "test", cfg.max_test_samples)
    seed_everything(cfg.seed)
    model, converted = build_model(
        cfg.model, train_set.num_classes, train_set.sample_shape, passes, cfg.include, cfg.exclude
    )
    if cfg.int_multiplier is not None:
        model, converted = prepare_quantized_run(model, cfg, train_set, device, fresh=fresh)
    elif fresh:
        load_init_weights(model, cfg)
    model.to(device)
    ext_meta = ext.attach(model) if ext is not None else {}
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)
    return _Run(
        cfg=cfg,
        world=world,
        device=device,
        ext=ext,
        passes=passes,
        train_set=train_set,
        test_set=test_set,
        model=model,
        converted=converted,
        optimizer=optimizer,
        scheduler=scheduler,
        ext_meta=ext_meta,
    )


def _metadata(run: _Run) -> dict[str, Any]:
    """The contents of ``config.json`` for a fresh run."""
    cfg = run.cfg
    meta = {
        "schema": rundir.CONFIG_SCHEMA,
        "created": utc_now(),
        "config": cfg.to_dict(),
        "multipliers": describe_multipliers(cfg),
        "model": {
            **model_info(cfg.model),
            "parameters": sum(p.numel() for p in run.model.parameters()),
            "converted_layers": run.converted,
        },
        "dataset": {
            "name": cfg.dataset,
            "root": str(run.train_set.root) if run.train_set.root else None,
            "train_samples": len(run.train_set),
            "test_samples": len(run.test_set),
            "classes": list(run.train_set.classes),
        },
        "distributed": run.world.describe(cfg.batch_size),
        "environment": environment(run.device),
    }
    if run.ext is not None:
        meta[run.ext.section] = {**run.ext.settings(), **run.ext_meta}
    return meta


def _start_run(run: _Run, state: dict[str, Any] | None) -> int:
    """Restore a checkpoint, or write a fresh run's files; returns the last epoch done."""
    if state is None:
        if run.world.is_main:
            # Everything is built and checked by now: only here does an old run make way.
            rundir.clear_run_files(run.out)
            rundir.write_config(run.out, _metadata(run))
            rundir.write_metrics(run.out, [])
        say(run.verbose, _start_line(run))
        return 0
    restore_training_state(
        state, run.model, run.optimizer, run.scheduler, run.out / rundir.CHECKPOINT_FILE
    )
    run.history = list(state["history"])
    start_epoch = int(state["epoch"])
    if run.world.is_main:
        _record_resume(run, start_epoch)
    say(run.verbose, f"resuming {run.out} after epoch {start_epoch}/{run.cfg.epochs}")
    return start_epoch


def _record_resume(run: _Run, start_epoch: int) -> None:
    """Rank 0, on resume: the checkpoint's history replaces ``metrics.jsonl`` (which may hold
    a line of the epoch that was interrupted), ``config.json`` notes the resumption, and the
    temporary files of writes a killed run left behind are deleted."""
    rundir.remove_stale_temporaries(run.out)
    rundir.write_metrics(run.out, run.history)
    meta = rundir.read_config(run.out) or _metadata(run)
    meta["config"] = run.cfg.to_dict()  # epochs may have grown
    meta["distributed"] = run.world.describe(run.cfg.batch_size)
    resumed: dict[str, Any] = {"after_epoch": start_epoch, "time": utc_now()}
    if run.world.enabled:
        resumed["world_size"] = run.world.size
    meta.setdefault("resumed", []).append(resumed)
    rundir.write_config(run.out, meta)


def _start_line(run: _Run) -> str:
    """The line announcing a fresh run."""
    cfg, world = run.cfg, run.world
    if run.ext is not None:
        start = run.ext.start_message(cfg, len(run.train_set), len(run.test_set))
        if start is not None:
            return f"{start} -> {run.out}"
    line = (
        f"training {cfg.model} on {cfg.dataset} ({len(run.train_set)} train / "
        f"{len(run.test_set)} test samples) with multiplier {run.passes!r}"
    )
    if cfg.int_multiplier is not None:
        line = line.replace(repr(run.passes), run.converted[0]["multiplier"])
    line += f", {len(run.converted)} layers converted" if run.converted else " (exact float32)"
    if world.enabled:
        per_process = world.describe(cfg.batch_size)["batch_size_per_process"]
        line += (
            f", {world.size} processes ({world.backend}; batch {cfg.batch_size} = "
            f"up to {per_process} per process)"
        )
    return line + f" -> {run.out}"


def _train_epochs(run: _Run, start_epoch: int) -> None:
    """Epochs ``start_epoch + 1 .. epochs``: train, evaluate, record, checkpoint."""
    # Wrapped after convert_model and after loading the checkpoint: DDP broadcasts rank 0's
    # parameters at construction and hooks the gradients of the converted layers.
    train_model = run.world.wrap(run.model, run.device)
    test_span = shard_span(len(run.test_set), run.world) if run.world.enabled else None
    epoch = saved_epoch = start_epoch
    try:
        for epoch in range(start_epoch + 1, run.cfg.epochs + 1):
            record = _run_epoch(run, train_model, epoch, test_span)
            run.history.append(record)
            _save_epoch(run, epoch)
            saved_epoch = epoch
            suffix = run.ext.epoch_suffix(record) if run.ext is not None else ""
            say(run.verbose, epoch_line(record, run.cfg.epochs) + suffix)
    except KeyboardInterrupt:
        ckpt_path = run.out / rundir.CHECKPOINT_FILE
        where = (
            f"{ckpt_path} holds epoch {saved_epoch} intact"
            if saved_epoch
            else "no epoch was complete, so there is no checkpoint yet"
        )
        say(run.world.is_main, f"interrupted in epoch {epoch}; {where}: continue with --resume")
        raise


def _run_epoch(
    run: _Run, train_model: nn.Module, epoch: int, test_span: tuple[int, int] | None
) -> dict[str, Any]:
    """Train and evaluate one epoch on every process; returns the epoch's record."""
    cfg, world = run.cfg, run.world
    t0 = time.perf_counter()
    lr = float(run.optimizer.param_groups[0]["lr"])
    bar = Progress(len(run.train_set), f"epoch {epoch}/{cfg.epochs}", run.verbose)
    try:
        train_sums = _train_one_epoch(
            train_model,
            run.optimizer,
            run.train_set,
            batch_size=cfg.batch_size,
            generator=_epoch_generator(cfg.seed, epoch),
            device=run.device,
            bar=bar,
            world=world,
            forward=run.ext.forward if run.ext is not None else None,
            # One process stops at the batch; several check the epoch's sum below, so that
            # all of them stop together instead of one waiting for the others' gradients.
            on_nonfinite=None if cfg.allow_nonfinite or world.enabled else _stopper(run, epoch),
        )
    finally:
        bar.close()
    train_seconds = time.perf_counter() - t0
    # The unwrapped model: every process evaluates its own part of the test set, and DDP's
    # forward would expect the same number of calls on all of them.
    test_sums = _evaluate_sums(
        run.model,
        run.test_set,
        batch_size=_eval_batch_size(cfg.batch_size),
        device=run.device,
        progress=run.verbose,
        desc=f"test {epoch}/{cfg.epochs}",
        span=test_span,
    )
    # One all-reduce for both; it is also the barrier before rank 0 saves.
    loss_sum, correct, seen, t_loss_sum, t_correct, t_seen = world.sum(
        (*train_sums, *test_sums), run.device
    )
    if not (cfg.allow_nonfinite or math.isfinite(loss_sum)):
        err = _diverged(run, epoch, None, loss_sum)
        raise err if world.is_main else PeerError(str(err))  # rank 0 reports it
    extra = (
        run.ext.epoch_metrics(run.model, run.test_set, _eval_batch_size(cfg.batch_size))
        if run.ext is not None
        else {}
    )
    seen, t_seen = max(seen, 1), max(t_seen, 1)
    if run.scheduler is not None:
        run.scheduler.step()
    samples = seen if world.enabled else len(run.train_set)
    return {
        "epoch": epoch,
        "train_loss": _finite(loss_sum / seen),
        "train_acc": correct / seen,
        "test_loss": _finite(t_loss_sum / t_seen),
        "test_acc": t_correct / t_seen,
        **extra,
        "seconds": round(time.perf_counter() - t0, 3),
        "lr": lr,
        "samples_per_s": round(samples / max(train_seconds, 1e-9), 1),
    }


def _diverged(run: _Run, epoch: int, batch: int | None, loss: float) -> DivergedError:
    """The error that stops a run whose training loss became ``loss`` (NaN or inf)."""
    where = f"epoch {epoch}" if batch is None else f"batch {batch} of epoch {epoch}"
    kept = (
        f"{run.out / rundir.CHECKPOINT_FILE} still holds epoch {epoch - 1}"
        if epoch > 1
        else "no epoch was complete, so there is no checkpoint"
    )
    return DivergedError(
        f"training diverged: the training loss is {loss} in {where}; the run stopped and "
        f"{kept}. Lower the learning rate (--lr, now {run.cfg.lr:g}), or pass "
        "--allow-nonfinite (allow_nonfinite=True) to train on regardless"
    )


def _stopper(run: _Run, epoch: int) -> Callable[[int, float], None]:
    """What :func:`_train_one_epoch` calls on a non-finite loss: raise :func:`_diverged`."""

    def stop(batch: int, loss: float) -> None:
        raise _diverged(run, epoch, batch, loss)

    return stop


def _save_epoch(run: _Run, epoch: int) -> None:
    """Rank 0 replaces the checkpoint, then appends the epoch's record; all processes wait.

    The checkpoint goes first: a run killed between the two writes has a checkpoint whose
    history ``resume`` writes back to ``metrics.jsonl``, whereas a record without its
    checkpoint would be a finished epoch that nothing can continue.
    """
    with run.world.shared_errors():  # the barrier after rank 0's writes
        if run.world.is_main:
            ckpt = checkpoint_state(
                run.cfg, epoch, run.model, run.optimizer, run.scheduler, run.history
            )
            if run.ext is not None:
                ckpt[run.ext.section] = run.ext.settings()
            save_checkpoint(run.out / rundir.CHECKPOINT_FILE, ckpt)
            rundir.append_metrics(run.out, run.history[-1])


def _summary(
    run: _Run, state: dict[str, Any] | None, start_epoch: int, start_time: float
) -> dict[str, Any]:
    """What :func:`train` returns."""
    history = run.history
    best = max(history, key=lambda r: r["test_acc"]) if history else None
    return {
        "out_dir": str(run.out),
        "model": run.cfg.model,
        "dataset": run.cfg.dataset,
        "multipliers": {role: m["name"] for role, m in multiplier_fingerprints(run.cfg).items()},
        "epochs": run.cfg.epochs,
        "epochs_completed": len(history),
        "resumed_from": start_epoch if state is not None else None,
        "final": history[-1] if history else None,
        "best_test_acc": best["test_acc"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "history": history,
        "seconds": round(time.perf_counter() - start_time, 3),
        "world_size": run.world.size,
        "rank": run.world.rank,
    }


def format_loss(x: float | None) -> str:
    """A loss for a progress or summary line (``nan`` for a non-finite one)."""
    return "nan" if x is None else f"{x:.4f}"


def epoch_line(r: dict[str, Any], epochs: int) -> str:
    """The summary line of one epoch's record."""
    return (
        f"epoch {r['epoch']}/{epochs}: train loss {format_loss(r['train_loss'])} "
        f"acc {100 * r['train_acc']:.2f}% | test loss {format_loss(r['test_loss'])} "
        f"acc {100 * r['test_acc']:.2f}% | lr {r['lr']:.4g} | {r['seconds']:.1f} s "
        f"({r['samples_per_s']:.0f} img/s)"
    )


# ---------------------------------------------------------------------------- epochs
def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # The data order depends on (seed, epoch) only, never on how much randomness earlier
    # epochs used, so a resumed run sees the same batches as an uninterrupted one.
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _eval_batch_size(batch_size: int) -> int:
    # Inference holds no activations for backward; larger batches amortize kernel set-up.
    return max(batch_size, 256)


def _epoch_batches(
    data: ImageDataset, batch_size: int, generator: torch.Generator, world: World
) -> Iterator[tuple[Tensor, Tensor, float, int]]:
    """``(images, labels, loss_scale, global_batch)`` of one epoch for this process."""
    if not world.enabled:
        for x, y in data.batches(batch_size, shuffle=True, generator=generator):
            yield x, y, 1.0, int(y.shape[0])
        return
    for idx, scale, m in shard_batches(len(data), batch_size, generator, world):
        # Each rank draws its slice's augmentation from the shared per-epoch generator, after
        # the order: deterministic per (seed, epoch, world size).
        x, y = data.batch(idx, augment=data.augments, generator=generator)
        yield x, y, scale, m


def _train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageDataset,
    *,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    bar: ProgressLike,
    world: World,
    forward: _ForwardHook | None = None,
    on_nonfinite: Callable[[int, float], None] | None = None,
) -> tuple[float, int, int]:
    """One pass over ``data`` (this process's share of it); ``forward(model, x, y)``, if
    given, is a context around each batch's forward pass, and ``on_nonfinite(batch, loss)``
    is called (to raise) when a batch's loss is NaN or infinite.

    Returns:
        ``(loss_sum, correct, samples)`` over this process's samples; the sums of several
        processes add up to the epoch's.
    """
    model.train()
    total_loss = 0.0
    correct = 0
    seen = 0
    batches = _epoch_batches(data, batch_size, generator, world)
    for batch, (x, y, scale, global_n) in enumerate(batches, 1):
        x, y = x.to(device), y.to(device)
        with forward(model, x, y) if forward is not None else contextlib.nullcontext():
            logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        # DDP averages the processes' gradients; unequal parts need their mean loss weighted
        # so that the average is the mean over the global batch.
        (loss if scale == 1.0 else loss * scale).backward()
        optimizer.step()
        n = int(y.shape[0])
        value = float(loss.detach())
        if on_nonfinite is not None and not math.isfinite(value):
            on_nonfinite(batch, value)
        total_loss += value * n
        correct += int((logits.detach().argmax(dim=1) == y).sum())
        seen += n
        bar.update(global_n, total_loss / seen, correct / seen)
    return total_loss, correct, seen


@torch.no_grad()
def _evaluate_sums(
    model: nn.Module,
    data: ImageDataset,
    *,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "eval",
    span: tuple[int, int] | None = None,
) -> tuple[float, int, int]:
    """``(loss_sum, correct, samples)`` of ``model`` in eval mode on ``data`` (or on the
    samples ``span = (lo, hi)`` of it)."""
    was_training = model.training
    model.eval()
    total_loss = 0.0
    correct = 0
    lo, hi = (0, len(data)) if span is None else span
    bar = Progress(hi - lo, desc, progress)
    batches: Iterable[tuple[Tensor, Tensor]] = (
        data.batches(batch_size)
        if span is None
        else (
            data.batch(torch.arange(i, min(i + batch_size, hi))) for i in range(lo, hi, batch_size)
        )
    )
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            bar.update(int(y.shape[0]))
    finally:
        bar.close()
        model.train(was_training)
    return total_loss, correct, hi - lo


# ---------------------------------------------------------------------------- evaluate
def evaluate(
    checkpoint: str | os.PathLike[str],
    multiplier: MultiplierLike | IntMultiplier,
    *,
    dataset: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "test",
    batch_size: int = 256,
    max_samples: int | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    quant: QuantConfig | None = None,
    calibration_samples: int | None = None,
) -> dict[str, Any]:
    """Evaluate a trained checkpoint with ``multiplier`` in every converted layer.

    The model is loaded by :func:`~approxsim.training.load_trained`. With an integer
    multiplier (an :class:`~approxsim.IntMultiplier`, or any multiplier with ``quant``) the
    float checkpoint is quantized after training: its layers become quantized approximate
    layers (:func:`approxsim.convert_model` with ``quant``), calibrated on the first
    ``calibration_samples`` samples of the training split, and every product goes through
    the integer table.

    Args:
        checkpoint: A ``checkpoint.pt`` written by :func:`train`, or its run folder.
        multiplier: Multiplier of the inference products (``"fp32"``: exact), or an
            integer multiplier (with ``quant``, also the name of one, ``"drum4_u8"``).
        dataset: Dataset name; default: the one the checkpoint was trained on.
        data_dir: Dataset folder; default: the one used in training, else the defaults.
        split: ``"test"`` or ``"train"``.
        batch_size: Samples per forward pass.
        max_samples: Evaluate the first N samples only.
        include: Layers to convert (fnmatch patterns); default: as in training.
        exclude: Layers to keep exact; default: as in training.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        threads: CPU threads for the run; ``None``: unchanged.
        quant: How a quantized evaluation maps operands to codes; ``None`` with an integer
            multiplier: ``QuantConfig()``. Refused with a float multiplier.
        calibration_samples: Training samples that calibrate the activation ranges of a
            quantized evaluation (all if the split is smaller). ``None``: the ranges a
            quantization-aware run saved, else 512. Refused with a float multiplier.

    Returns:
        A JSON-serializable dict: ``schema``, ``checkpoint``, ``epoch``, ``model``,
        ``dataset``, ``split``, ``samples``, ``multiplier`` (name, fingerprint, provenance,
        error statistics), ``trained_with`` (names per pass), ``loss``, ``accuracy``,
        ``seconds``; a quantized evaluation adds ``quant`` (the settings and the resolved
        scheme), ``calibration`` (``from`` ``"calibration"`` with split, samples, batches,
        or ``"checkpoint"``) and ``converted`` (layer names).

    Raises:
        CheckpointError: a missing or damaged checkpoint.
        TrainError: invalid arguments.
        QuantError: ``quant`` with a float multiplier, or one that does not fit the integer
            multiplier (e.g. more bits).
        DatasetError, MultiplierError: data or multiplier problems (a quantized evaluation
            also needs the training split, for calibration).
    """
    t0 = time.perf_counter()
    check_int("batch_size", batch_size, 1)
    check_int("max_samples", max_samples, 1, optional=True)
    check_int("threads", threads, 1, optional=True)
    quantized = resolve_quantized(multiplier, quant, calibration_samples)
    if quantized is None:
        check_multiplier("multiplier", multiplier, optional=False)
    extra: dict[str, Any] = {}
    with thread_settings(threads):
        trained = load_trained(
            checkpoint,
            None if quantized else PassMultipliers(cast(MultiplierLike, multiplier)),
            dataset=dataset,
            data_dir=data_dir,
            include=include,
            exclude=exclude,
            device=device,
        )
        model = trained.model
        described = trained.passes.forward.describe()
        if quantized is not None:
            int_mult, qconfig, n_calibration = quantized
            model, extra = quantize_trained(
                trained,
                int_mult,
                qconfig,
                calibration_samples=n_calibration,
                batch_size=batch_size,
                include=include,
                exclude=exclude,
                device=device,
            )
            described = int_mult.describe()
        data = trained.split(split).subset(max_samples)
        dev = resolve_device(device, error=TrainError)
        total, correct, n = _evaluate_sums(model, data, batch_size=batch_size, device=dev)
    n = max(n, 1)
    return {
        "schema": EVAL_SCHEMA,
        "checkpoint": str(checkpoint),
        "epoch": trained.epoch,
        "model": trained.model_name,
        "dataset": trained.dataset,
        "split": split,
        "samples": len(data),
        "multiplier": described,
        "trained_with": {role: m["name"] for role, m in trained.state["multipliers"].items()},
        **extra,
        "loss": _finite(total / n),
        "accuracy": correct / n,
        "seconds": round(time.perf_counter() - t0, 3),
    }
