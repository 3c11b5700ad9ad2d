"""The environment record of approxsim._runtime: what a benchmark ran under."""

from __future__ import annotations

import pytest

from approxsim._runtime import (
    THREAD_VARIABLES,
    describe_environment,
    machine_record,
    thread_environment,
)


def test_default_environment_is_said_so(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    rec = machine_record("cpu", argv=["approxsim", "bench", "ops"])
    assert rec["environment"] == {} and describe_environment(rec) == "default environment"
    assert isinstance(rec["cpu_features"], list)
    assert rec["torch_parallel_backend"]  # e.g. "OpenMP"


def test_set_thread_variables_are_recorded_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert thread_environment() == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2"}
    rec = machine_record("cpu")
    assert describe_environment(rec) == "OMP_NUM_THREADS=2, OMP_WAIT_POLICY=PASSIVE"


def test_bench_tables_say_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from approxsim.bench.ops import bench_ops, format_table

    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    result = bench_ops(
        "mitchell7", ["gemm512"], reps=1, warmup=0, quick=True, native_settings="same-process"
    )
    assert format_table(result).splitlines()[0].endswith("; approxsim: default environment")
