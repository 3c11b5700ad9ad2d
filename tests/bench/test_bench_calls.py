"""scripts/bench_calls.py: the single-call timings behind the before/after kernel records."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_calls.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_calls", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(module: ModuleType, monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_calls.py", *args])
    module.main()


def test_times_the_named_calls_and_restores_the_thread_count(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = _load()
    threads = torch.get_num_threads()
    _run(
        module,
        monkeypatch,
        "--calls",
        "f32_small_128x100x10,quant_lenet5_conv2",
        "--rounds",
        "1",
        "--reps",
        "2",
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# ") and "torch" in out[0]
    rows = {line.split()[0]: line.split()[1:] for line in out[3:]}
    assert set(rows) == {"f32_small_128x100x10", "quant_lenet5_conv2"}
    for threads_col, minimum, median in rows.values():
        assert threads_col == "1"
        assert 0 < float(minimum) <= float(median)
    assert torch.get_num_threads() == threads


def test_every_call_computes_what_it_names() -> None:
    module = _load()
    gemm = module._gemm(25, 300, 6, True)()
    assert gemm.shape == (1, 25, 6)
    conv = module._quant_conv(2, 6, 16, 14, 5, 0)()
    assert conv.shape == (2, 16, 10, 10) and conv.dtype == torch.float32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--calls", "no_such_call"), "unknown call(s) no_such_call"),
        (("--rounds", "0"), "--rounds and --reps must be at least 1"),
    ],
)
def test_bad_arguments_are_refused(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    module = _load()
    with pytest.raises(SystemExit) as exc:
        _run(module, monkeypatch, *args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
