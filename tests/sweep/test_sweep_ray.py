"""The Ray executor on a local Ray instance (2 CPUs): a point runs as a Ray task and gives the
same run folder as the local executor's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sweep_helpers import metrics, tiny_spec

from approxsim.cli.sweep import command_options, point_check
from approxsim.sweep import plan_sweep, read_state, run_sweep

ray = pytest.importorskip("ray", reason="the Ray executor needs pip install 'approxsim[sweep]'")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_sweep_matches_the_local_one(
    local_ray: None, tmp_path: Path, data_dir: Path, local_sweep
) -> None:
    reference, _ = local_sweep
    out = tmp_path / "sweep"
    spec = tiny_spec(data_dir, seed=[0], multiplier=["fp32"])
    plan = plan_sweep(
        spec, out, options=command_options(spec.command), check=point_check(spec.command)
    )
    lines: list[str] = []
    summary = run_sweep(plan, executor="ray", cpus_per_run=1, report=lines.append)
    assert summary["done"] == 1 and summary["failed"] == []
    assert read_state(out)["points"][0]["status"] == "done"
    assert any("fp32-s0 done in" in line for line in lines)
    log = (out / "logs" / "fp32-s0.log").read_text()
    assert "--threads 1" in log  # the run's threads follow --cpus-per-run
    # The same run (the thread counts may differ from the local sweep's: sums in another order).
    ours, theirs = metrics(out / "fp32-s0"), metrics(reference / "fp32-s0")
    assert [r["epoch"] for r in ours] == [r["epoch"] for r in theirs] == [1, 2]
    for a, b in zip(ours, theirs, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert ray.is_initialized()  # a Ray instance the caller started is left running
