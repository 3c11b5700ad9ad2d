"""``approxsim train`` with several processes (torchrun, DistributedDataParallel, gloo on CPU).

One ``torchrun --nproc-per-node 2`` launch (127.0.0.1, a free port) runs this file as its
worker script: it calls the ``approxsim`` command three times in the same processes — one epoch
of LeNet-5 with ``mitchell7`` on a tiny synthetic IDX dataset, ``--resume`` to two epochs, and
a refused restart in the now non-empty folder — and each rank dumps the weights it trained.
The test checks that both ranks hold the same weights, that they match a single-process run of
the same settings (the global batch is split 8/7 across the ranks, so the loss weighting
matters), and that only rank 0 writes files and output. The sharding helpers are checked
directly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from approxsim.data import write_banded_mnist
from approxsim.training import TrainConfig, TrainError, load_checkpoint, train
from approxsim.training import loop as loop_mod
from approxsim.training.processes import World, shard_batches, shard_span

N_TRAIN, N_TEST = 60, 24
BATCH = 15  # odd: every global batch splits 8/7 across two processes
_WORKER_FLAG = "--approxsim-ddp-worker"
_WORKER_LIMIT_S = 150  # each worker process exits after this long, hung or not
_LAUNCH_LIMIT_S = 240


def _train_argv(data_dir: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        "lenet5",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(data_dir),
        "--multiplier",
        "mitchell7",
        "--epochs",
        str(epochs),
        "--batch-size",
        str(BATCH),
        "--threads",
        "1",
        "--out",
        str(out),
        *extra,
    ]


# ---------------------------------------------------------------------------- worker
def _worker(spec_file: str) -> int:
    """One torchrun process: run the spec's commands, dump this rank's weights after each."""
    import faulthandler

    from approxsim.cli import main

    # A hung collective must not outlive the test: print where it hangs, then exit (torchrun
    # then stops the other process).
    faulthandler.dump_traceback_later(_WORKER_LIMIT_S, exit=True)

    spec = json.loads(Path(spec_file).read_text())
    dumps, out = Path(spec["dumps"]), Path(spec["out"])
    rank = int(os.environ["RANK"])
    models: list[torch.nn.Module] = []
    make_optimizer = loop_mod.make_optimizer

    def capture(cfg: Any, model: torch.nn.Module) -> Any:
        models.append(model)  # the unwrapped, converted model this rank trains
        return make_optimizer(cfg, model)

    loop_mod.make_optimizer = capture  # type: ignore[assignment]
    for step in spec["steps"]:
        models.clear()
        code = main(step["argv"])
        report: dict[str, Any] = {"code": code}
        if code == 0:
            torch.save(models[-1].state_dict(), dumps / f"{step['name']}-rank{rank}.pt")
            report["metrics_lines"] = len((out / "metrics.jsonl").read_text().splitlines())
            report["checkpoint_epoch"] = load_checkpoint(out)["epoch"]
        (dumps / f"{step['name']}-rank{rank}.json").write_text(json.dumps(report))
    return 0


# ---------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loopback_interface() -> str | None:
    names = (
        {name for _, name in socket.if_nameindex()} if hasattr(socket, "if_nameindex") else set()
    )
    return next((n for n in ("lo", "lo0") if n in names), None)


def _single(data_dir: Path, out: Path, epochs: int, **kw: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "model": "lenet5",
        "dataset": "fashion-mnist",
        "data_dir": data_dir,
        "multiplier": "mitchell7",
        "epochs": epochs,
        "batch_size": BATCH,
        "threads": 1,
        "progress": False,
    }
    settings.update(kw)
    return TrainConfig(out, **settings)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- sharding
def _world(size: int, rank: int) -> World:
    return World(size=size, rank=rank)


@pytest.mark.parametrize(("n", "batch", "size"), [(60, 15, 2), (31, 15, 2), (50, 16, 3), (7, 4, 4)])
def test_shards_cover_the_single_process_batches(n: int, batch: int, size: int) -> None:
    single = list(shard_batches(n, batch, torch.Generator().manual_seed(5), _world(1, 0)))
    parts = [
        list(shard_batches(n, batch, torch.Generator().manual_seed(5), _world(size, r)))
        for r in range(size)
    ]
    # A last batch with fewer samples than processes is skipped; all others are kept whole.
    kept = [b for b in single if b[2] >= size]
    assert all(len(p) == len(kept) for p in parts)
    for step, (order, _, m) in enumerate(kept):
        assert torch.equal(torch.cat([p[step][0] for p in parts]), order)
        sizes = [len(p[step][0]) for p in parts]
        assert max(sizes) - min(sizes) <= 1 and all(p[step][2] == m for p in parts)
        # Each sample's weight in DDP's average of the weighted mean losses: 1 / m.
        for p in parts:
            idx, scale, _ = p[step]
            assert scale / (len(idx) * size) == pytest.approx(1 / m)
            assert (scale == 1.0) == (len(idx) * size == m)
    expected_order = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.cat([o for o, _, _ in single]), expected_order)


@pytest.mark.parametrize(("n", "size"), [(24, 2), (25, 3), (2, 4)])
def test_test_set_spans_partition_it(n: int, size: int) -> None:
    spans = [shard_span(n, _world(size, r)) for r in range(size)]
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


# ---------------------------------------------------------------------------- launch detection
def test_world_size_1_is_a_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_banded_mnist(tmp_path / "data", N_TRAIN, N_TEST)
    monkeypatch.setenv("WORLD_SIZE", "1")
    res = train(_single(tmp_path / "data", tmp_path / "run", 1, multiplier="fp32"))
    assert (res["world_size"], res["rank"]) == (1, 0)
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["distributed"]["world_size"] == 1 and meta["distributed"]["backend"] is None


def test_incomplete_launch_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(TrainError, match="RANK/LOCAL_RANK.*torchrun"):
        train(_single(tmp_path, tmp_path / "run", 1))
    assert not (tmp_path / "run").exists()


def test_python_dash_m_approxsim(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "approxsim", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and res.stdout.startswith("approxsim ")


# ---------------------------------------------------------------------------- two processes
@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
def test_torchrun_two_processes_match_a_single_process(tmp_path: Path) -> None:
    pytest.importorskip("approxsim.convert", reason="convert_model is not available yet")
    data_dir, out, dumps = tmp_path / "data", tmp_path / "ddp", tmp_path / "dumps"
    diverged = tmp_path / "diverged"
    data_dir.mkdir()
    dumps.mkdir()
    write_banded_mnist(data_dir, N_TRAIN, N_TEST)
    spec = {
        "dumps": str(dumps),
        "out": str(out),
        "steps": [
            {"name": "first", "argv": _train_argv(data_dir, out, 1)},
            {"name": "resumed", "argv": _train_argv(data_dir, out, 2, "--resume")},
            {"name": "refused", "argv": _train_argv(data_dir, out, 2)},
            # Diverges: every rank stops after the epoch's summed loss, none waits for another.
            {"name": "diverged", "argv": _train_argv(data_dir, diverged, 2, "--lr", "1e30")},
        ],
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))

    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    if (lo := _loopback_interface()) is not None:
        env["GLOO_SOCKET_IFNAME"] = lo  # keep the processes' traffic on the loopback
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        str(Path(__file__).resolve()),
        _WORKER_FLAG,
        str(spec_file),
    ]
    log_out, log_err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    # Files, not pipes: a worker left behind could keep a pipe open and block the reads.
    with open(log_out, "w") as fo, open(log_err, "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, start_new_session=True)
        try:
            proc.wait(timeout=_LAUNCH_LIMIT_S)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # torchrun stops its workers on SIGTERM
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    stdout, stderr = log_out.read_text(), log_err.read_text()
    assert proc.returncode == 0, f"torchrun failed:\n{stdout}\n{stderr[-4000:]}"

    # The same settings in this process, one epoch, then resumed to two.
    single = tmp_path / "single"
    train(_single(data_dir, single, 1))
    single_1 = load_checkpoint(single)
    train(_single(data_dir, single, 2, resume=True))
    single_2 = load_checkpoint(single)

    def report(step: str, rank: int) -> dict[str, Any]:
        return dict(json.loads((dumps / f"{step}-rank{rank}.json").read_text()))

    def weights(step: str, rank: int) -> dict[str, torch.Tensor]:
        return dict(torch.load(dumps / f"{step}-rank{rank}.pt", weights_only=True))

    for rank in (0, 1):
        assert report("first", rank) == {"code": 0, "metrics_lines": 1, "checkpoint_epoch": 1}
        assert report("resumed", rank) == {"code": 0, "metrics_lines": 2, "checkpoint_epoch": 2}
        assert report("refused", rank) == {"code": 2}
        assert report("diverged", rank) == {"code": 2}
    assert stderr.count("training diverged") == 1  # rank 0 reports it, rank 1 stays quiet
    assert "no epoch was complete" in stderr and not (diverged / "checkpoint.pt").exists()
    # DDP's averaged gradients give both ranks the same weights, after the first epoch and
    # after resuming (where every rank loaded the checkpoint).
    for step in ("first", "resumed"):
        _assert_same(weights(step, 0), weights(step, 1), exact=True)
    final = load_checkpoint(out)
    _assert_same(final["model"], weights("resumed", 0), exact=True)
    # Same global batches and loss weighting as one process: equal up to summation order.
    _assert_same(weights("first", 0), single_1["model"], exact=False)
    _assert_same(weights("resumed", 0), single_2["model"], exact=False)
    for a, b in zip(_records(out), _records(single), strict=True):
        assert a["epoch"] == b["epoch"] and a["lr"] == b["lr"]
        for key in ("train_loss", "test_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
        for key, n in (("train_acc", N_TRAIN), ("test_acc", N_TEST)):
            assert a[key] == pytest.approx(b[key], abs=1.01 / n), key

    meta = json.loads((out / "config.json").read_text())
    assert meta["distributed"] == {
        "world_size": 2,
        "backend": "gloo",
        "batch_size_scope": "global",
        "batch_size_per_process": 8,
    }
    assert meta["config"]["batch_size"] == BATCH
    assert [r.get("world_size") for r in meta["resumed"]] == [2]
    # Only rank 0 prints: one summary per finished run, one progress line per epoch, one
    # error for the refused restart and one for the diverged run (rank 1 fails silently).
    assert stdout.count("final        test acc") == 2
    assert stderr.count("epoch 1/1: train loss") == 1
    assert stderr.count("epoch 2/2: train loss") == 1
    assert stderr.count("approxsim: error") == 2 and "is not empty" in stderr
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == _WORKER_FLAG:
    sys.exit(_worker(sys.argv[2]))
