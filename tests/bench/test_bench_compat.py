"""The old import paths of the benchmarks (``approxsim.experiments.bench*``) keep every name
they exported, as the same objects as in :mod:`approxsim.bench` and :mod:`approxsim.cli.bench`."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import approxsim.bench as bench
import approxsim.cli.bench as cli_bench

OLD = {
    "approxsim.experiments.bench": [
        "BenchError",
        "ConvGeometry",
        "Problem",
        "PROBLEMS",
        "DEFAULT_PROBLEMS",
        "QUICK_PROBLEMS",
        "PASSES",
        "list_problems",
        "bench_ops",
        "machine_record",
        "format_table",
        "save_results",
        "add_bench_parser",
        "run_bench_cli",
    ],
    "approxsim.experiments.bench_direct": [
        "DIRECT_PROBLEMS",
        "SCHEMA",
        "bench_direct",
        "format_direct_table",
        "add_direct_parser",
        "run_direct_cli",
    ],
    "approxsim.experiments.bench_models": [
        "DEFAULT_MODELS",
        "SCHEMA",
        "bench_models",
        "format_models_table",
        "add_models_parser",
        "run_models_cli",
    ],
    "approxsim.experiments": ["BenchError", "bench_ops", "format_table", "save_results"],
}


@pytest.mark.parametrize("module", sorted(OLD))
def test_old_names_are_the_new_objects(module: str) -> None:
    mod = importlib.import_module(module)
    for name in OLD[module]:
        old = getattr(mod, name)
        if name == "SCHEMA":
            assert old.startswith("approxsim.bench.")
            continue
        new = getattr(cli_bench, name, None) or getattr(bench, name)
        assert old is new, (module, name)
    with pytest.raises(AttributeError):
        mod.no_such_name  # noqa: B018


def test_the_library_loads_neither_the_cli_nor_training() -> None:
    # The compatibility package must not pull the command line or the training engine in.
    code = (
        "import sys, approxsim.experiments, approxsim.experiments.bench, approxsim.bench; "
        "print(sorted(m for m in sys.modules if m.startswith(('approxsim.cli', "
        "'approxsim.experiments.train', 'approxsim.experiments.compare'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
