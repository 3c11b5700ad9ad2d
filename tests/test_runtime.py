"""The environment record of approxsim._runtime: what a benchmark ran under."""

from __future__ import annotations

import subprocess
import sys

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
    # The switch back to approxsim's own thread pool is a thread setting too.
    monkeypatch.setenv("APPROXSIM_CPU_THREADS", "pool")
    assert thread_environment()["APPROXSIM_CPU_THREADS"] == "pool"


def test_bench_tables_say_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from approxsim.bench.ops import bench_ops, format_table

    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    result = bench_ops(
        "mitchell7", ["gemm512"], reps=1, warmup=0, quick=True, native_settings="same-process"
    )
    assert format_table(result).splitlines()[0].endswith("; approxsim: default environment")


def test_recording_and_setting_threads_map_one_openmp_runtime() -> None:
    # numba.get_num_threads() starts Numba's threading layer, whose OpenMP flavour maps a second
    # libgomp; the compiled kernels then could not share torch's. Checked in a fresh process.
    code = (
        "import torch\n"
        "from approxsim._runtime import machine_record, thread_settings\n"
        "from approxsim.ops._threads import mapped_openmp_runtimes\n"
        "machine_record('cpu')\n"
        "with thread_settings(1):\n"
        "    torch.ones(2) @ torch.ones(2)\n"
        "print(len(mapped_openmp_runtimes()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split()[-1] in ("0", "1")
