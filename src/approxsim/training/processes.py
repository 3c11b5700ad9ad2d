"""The processes of a training run: one, or a ``torch.distributed`` group under torchrun.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), or inside a process group the
caller has initialized, every process runs :func:`~approxsim.training.train`; this module
joins them (gloo on the CPU, NCCL on CUDA with one GPU per process, ``cuda:LOCAL_RANK``),
shards every global batch of the single-process order across them, sums their epoch
metrics, and makes one process's failure every process's failure (:meth:`World.shared_errors`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch import distributed as dist

from approxsim._runtime import resolve_device
from approxsim.training.errors import PeerError, TrainError

__all__ = ["World", "setup_world", "shard_batches", "shard_span"]


@dataclass
class World:
    """The processes of a run: one (the default) or a ``torch.distributed`` process group."""

    size: int = 1
    """Number of processes; 1 means no process group and no DDP."""

    rank: int = 0
    """This process's rank; rank 0 writes the run files and the progress output."""

    backend: str | None = None
    """``"gloo"`` or ``"nccl"`` when ``size > 1``."""

    owns_group: bool = False
    """Whether :func:`setup_world` created the process group (and so :meth:`close`
    destroys it)."""

    @property
    def enabled(self) -> bool:
        """Whether several processes train together."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes files and output."""
        return self.rank == 0

    def describe(self, batch_size: int) -> dict[str, Any]:
        """The ``distributed`` section of ``config.json``."""
        return {
            "world_size": self.size,
            "backend": self.backend,
            # batch_size is the number of samples of one optimizer step over all processes.
            "batch_size_scope": "global",
            "batch_size_per_process": -(-batch_size // self.size),
        }

    @contextlib.contextmanager
    def shared_errors(self) -> Iterator[None]:
        """Run a block on every process and let all of them fail when one of them fails.

        The block ends with a collective (so it is also a barrier): without it, the other
        processes would wait in their next collective until the launcher kills them.

        Raises:
            The process's own exception, or :class:`PeerError` naming the failed process.
        """
        if not self.enabled:
            yield
            return
        failure: Exception | None = None
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - re-raised below once all processes know
            failure = exc
        messages: list[Any] = [None] * self.size
        dist.all_gather_object(
            messages, None if failure is None else f"{type(failure).__name__}: {failure}"
        )
        failed = [r for r, m in enumerate(messages) if m is not None]
        if not failed:
            return
        if failure is not None and (self.is_main or messages[0] is None):
            raise failure
        first = failed[0]
        raise PeerError(f"process {first} of {self.size} failed: {messages[first]}") from failure

    def sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """``values`` summed element-wise over the processes (unchanged with one process)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.tolist()]

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` when several
        processes train; the converted layers are ordinary modules, so DDP's gradient hooks
        see the gradients the approximate backward GEMMs produce."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, output_device=None)

    def close(self) -> None:
        """Destroy the process group if :func:`setup_world` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


#: Process groups :func:`setup_world` created in this process (the same count on every rank).
_GROUPS_CREATED = itertools.count()


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise TrainError(
            f"environment variable {name}={text!r} is not an integer; launch several "
            "processes with torchrun, which sets WORLD_SIZE, RANK and LOCAL_RANK"
        ) from None


def _launch() -> tuple[int, int, int] | None:
    """``(world_size, rank, local_rank)`` of a multi-process launch, else ``None``.

    A process group initialized by the caller wins; otherwise torchrun's environment
    variables decide (``WORLD_SIZE`` of 1 or unset: a single process).
    """
    if dist.is_available() and dist.is_initialized():
        group_size, group_rank = dist.get_world_size(), dist.get_rank()
        group_local = _env_int("LOCAL_RANK")
        if group_size <= 1:
            return None
        return group_size, group_rank, group_rank if group_local is None else group_local
    size = _env_int("WORLD_SIZE")
    if size is None or size <= 1:
        return None
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if rank is None or local is None or not 0 <= rank < size:
        raise TrainError(
            f"WORLD_SIZE={size} is set but RANK/LOCAL_RANK are missing or out of range; "
            "launch several processes with torchrun (torchrun --nproc-per-node N -m approxsim "
            "train ...), or unset WORLD_SIZE for a single process"
        )
    return size, rank, local


def _process_device(device_name: str, local: int) -> torch.device:
    """This process's GPU under a multi-process launch (``cuda:LOCAL_RANK``)."""
    if torch.device(device_name).index is not None:
        raise TrainError(
            f"device {device_name!r}: with several processes pass --device cuda "
            "(device='cuda'); each process then uses cuda:LOCAL_RANK"
        )
    if local >= torch.cuda.device_count():
        raise TrainError(
            f"process with LOCAL_RANK={local} has no GPU: only "
            f"{torch.cuda.device_count()} visible; start at most that many processes "
            "per node (--nproc-per-node)"
        )
    dev = torch.device("cuda", local)
    torch.cuda.set_device(dev)
    return dev


def setup_world(device_name: str) -> tuple[World, torch.device]:
    """Join the process group of a torchrun launch (if any) and pick this process's device.

    Args:
        device_name: The run's device setting (``"cpu"``, ``"cuda"``, ``"cuda:N"``).

    Returns:
        ``(world, device)``.

    Raises:
        TrainError: torch.distributed or the backend is missing, an explicit CUDA index
            under several processes, more processes than GPUs, or a failed rendezvous.
    """
    launch = _launch()
    dev = resolve_device(device_name, error=TrainError)
    if launch is None:
        return World(), dev
    size, rank, local = launch
    if not dist.is_available():
        raise TrainError(
            f"{size} processes were launched but this torch build has no torch.distributed; "
            "install a build with it or run a single process"
        )
    if dev.type == "cuda":
        dev = _process_device(device_name, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dist.is_initialized():
        return World(size, rank, dist.get_backend(), owns_group=False), dev
    available = dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available()
    if not available:
        raise TrainError(
            f"torch.distributed's {backend} backend is not available in this torch build; "
            f"{'use --device cpu (gloo)' if backend == 'nccl' else 'install a build with gloo'}"
        )
    try:
        store, _, _ = next(dist.rendezvous("env://", rank, size))
        # A fresh key prefix per group: after destroy_process_group the launcher's store still
        # holds the previous group's addresses, and a second train() in the same processes
        # would read them under the default prefix (connection refused, or a hang).
        store = dist.PrefixStore(f"approxsim.train/{next(_GROUPS_CREATED)}", store)
        dist.init_process_group(backend, store=store, world_size=size, rank=rank)
    except (ValueError, RuntimeError) as exc:
        raise TrainError(
            f"process {rank} of {size} could not join the process group ({backend}): {exc}. "
            "torchrun sets MASTER_ADDR and MASTER_PORT; check that they are reachable"
        ) from None
    return World(size, rank, backend, owns_group=True), dev


def shard_batches(
    n: int, batch_size: int, generator: torch.Generator, world: World
) -> Iterator[tuple[Tensor, float, int]]:
    """This process's part of every batch of one epoch in the single-process order.

    The epoch's order is the single-process one (``randperm`` of ``generator``); each global
    batch of ``batch_size`` samples is cut into ``world.size`` contiguous parts whose sizes
    differ by at most one, and process ``r`` takes part ``r``. A last batch with fewer
    samples than processes is skipped by all of them (DDP needs every process in every
    step).

    Args:
        n: Samples in the epoch.
        batch_size: The global batch size.
        generator: The epoch's generator (the same on every process).
        world: The processes.

    Yields:
        ``(indices, loss_scale, global_batch)``: the sample indices of this process,
        the factor for its mean loss that makes DDP's gradient average the mean over the
        global batch (``size * part / global_batch``; exactly 1.0 when the parts are equal),
        and the global batch's size.
    """
    order = torch.randperm(n, generator=generator)
    size, rank = world.size, world.rank
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        if m < size:
            break
        base, extra = divmod(m, size)
        lo = start + rank * base + min(rank, extra)
        part = base + (1 if rank < extra else 0)
        yield order[lo : lo + part], size * part / m, m


def shard_span(n: int, world: World) -> tuple[int, int]:
    """The contiguous ``[lo, hi)`` range of ``n`` samples this process evaluates."""
    base, extra = divmod(n, world.size)
    lo = world.rank * base + min(world.rank, extra)
    return lo, lo + base + (1 if world.rank < extra else 0)
