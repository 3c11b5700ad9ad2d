"""``approxsim.bench.ops`` and ``approxsim bench ops``: the ops speed benchmark, on tiny problems.

These tests check the structure of the results, that every number is positive and finite, the
JSON file and the CLI handler — never the timings themselves (speed is reported, not tested).
The conv form runs against a stand-in ``approxsim.nn`` (an im2col ``ApproxConv2d`` over
``approxsim.matmul``) so it is covered whether or not the real layers are installed.
"""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import approxsim
from approxsim.bench import (
    PASSES,
    PROBLEMS,
    QUICK_PROBLEMS,
    BenchError,
    ConvGeometry,
    Problem,
    bench_ops,
    format_table,
    list_problems,
    save_results,
)
from approxsim.bench import ops as bench
from approxsim.bench.common import peak_bytes
from approxsim.cli import build_parser, main
from approxsim.cli.bench import run_bench_cli

REPS, WARMUP = 2, 1
#: Native timed beside approxsim, without child processes: these tests check the rest.
HERE = "same-process"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's approxsim cache out of the tests."""
    monkeypatch.setenv("APPROXSIM_CACHE_DIR", str(tmp_path / "approxsim-cache"))


class _StubApproxConv2d(nn.Conv2d):
    """A stand-in ``approxsim.nn.ApproxConv2d``: im2col and ``approxsim.matmul``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        padding: int = 0,
        bias: bool = True,
        multiplier: Any,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.pad = padding
        self.multiplier = multiplier

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        kh, kw = self.kernel_size
        cols = F.unfold(x, (kh, kw), padding=self.pad).transpose(1, 2)  # (B, L, K)
        wmat = self.weight.reshape(self.out_channels, -1).t()
        out = approxsim.matmul(cols, wmat, self.multiplier)  # (B, L, N)
        ho, wo = h + 2 * self.pad - kh + 1, w + 2 * self.pad - kw + 1
        return out.transpose(1, 2).reshape(b, self.out_channels, ho, wo)


@pytest.fixture
def stub_nn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``approxsim.nn`` the stand-in module for this test."""
    module = types.ModuleType("approxsim.nn")
    module.ApproxConv2d = _StubApproxConv2d  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "approxsim.nn", module)


@pytest.fixture
def no_nn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import approxsim.nn`` fail for this test."""
    monkeypatch.setitem(sys.modules, "approxsim.nn", None)  # None in sys.modules: ImportError


def _check_timing(t: dict[str, Any], reps: int) -> None:
    assert len(t["times_s"]) == reps
    for key in ("median_s", "min_s", "gmac_per_s"):
        assert math.isfinite(t[key]) and t[key] > 0, (key, t)
    assert t["min_s"] <= t["median_s"]


def _check_result(result: dict[str, Any], forms: set[tuple[str, str]], reps: int) -> None:
    assert result["schema"] == bench.SCHEMA
    assert result["config"]["reps"] == reps
    rows = result["rows"]
    assert {(r["problem"], r["op"]) for r in rows} == forms
    assert len(rows) == len(forms) * len(PASSES)
    for row in rows:
        assert row["pass"] in PASSES
        p = PROBLEMS[row["problem"]]
        assert (row["r"], row["k"], row["n"]) == (p.r, p.k, p.n)
        assert row["shape"] == p.shape
        factor = 1 if row["pass"] == "forward" else 3
        assert row["macs"] == factor * p.macs
        _check_timing(row["approx"], reps)
        _check_timing(row["native"], reps)
        assert row["ratio"] == pytest.approx(
            row["approx"]["gmac_per_s"] / row["native"]["gmac_per_s"]
        )
        assert row["slowdown"] == pytest.approx(1 / row["ratio"])
        # mitchell7 is approximate: the approximate path must not have computed exactly.
        assert 0 < row["forward_rel_error"] < 0.2
    machine = result["machine"]
    assert machine["cpu"] and machine["cpu_count"] >= 1
    assert machine["versions"]["torch"] == torch.__version__
    assert machine["date"] and "command" in machine


def test_registry_shapes_match_the_layers() -> None:
    # The numbers of the brief, computed independently of ConvGeometry.
    assert (PROBLEMS["lenet5_conv1"].r, PROBLEMS["lenet5_conv1"].k) == (25088, 25)
    assert (PROBLEMS["lenet5_conv2"].r, PROBLEMS["lenet5_conv2"].k) == (3200, 150)
    assert PROBLEMS["resnet18_layer1"].macs == 32768 * 576 * 64
    assert PROBLEMS["resnet18_layer4"].macs == 512 * 4608 * 512
    assert list_problems("resnet18*") == [
        "resnet18_layer1",
        "resnet18_layer4",
        "resnet18_layer1_b128",
        "resnet18_layer4_b128",
    ]
    assert PROBLEMS["resnet50_layer1_expand"].macs == 32768 * 64 * 256
    assert PROBLEMS["resnet18_layer1_b128"].r == 4 * PROBLEMS["resnet18_layer1"].r
    assert set(QUICK_PROBLEMS) <= set(PROBLEMS)


def test_problem_validation() -> None:
    with pytest.raises(BenchError, match="lowers to"):
        Problem("bad", "wrong K", 128, 26, 4, ConvGeometry(2, 3, 4, 3, 8, 8, padding=1))
    with pytest.raises(BenchError, match="does not fit"):
        ConvGeometry(1, 1, 1, 5, 3, 3)
    with pytest.raises(BenchError, match="positive"):
        Problem("bad", "zero rows", 0, 1, 1)


def test_bench_ops_quick_with_conv(stub_nn: None, tmp_path: Path) -> None:
    result = bench_ops(quick=True, reps=REPS, warmup=WARMUP, native_settings=HERE)
    forms = {("tiny_gemm", "gemm"), ("tiny_conv", "gemm"), ("tiny_conv", "conv")}
    _check_result(result, forms, REPS)
    assert result["skipped"] == []
    path = save_results(result, tmp_path / "sub" / "bench.json")
    loaded = json.loads(path.read_text())
    assert loaded["rows"] == json.loads(json.dumps(result["rows"]))
    table = format_table(loaded)
    assert "tiny_conv" in table and "forward+backward" in table
    # One line per row plus title, header, rule and the note.
    assert len(table.splitlines()) == len(result["rows"]) + 4


def test_bench_ops_skips_conv_without_nn(no_nn: None) -> None:
    lines: list[str] = []
    result = bench_ops(
        problems=["tiny_conv"],
        progress=lines.append,
        reps=REPS,
        warmup=WARMUP,
        native_settings=HERE,
    )
    _check_result(result, {("tiny_conv", "gemm")}, REPS)
    [skip] = result["skipped"]
    assert (skip["problem"], skip["op"]) == ("tiny_conv", "conv")
    assert "approxsim.nn" in skip["reason"]
    assert any("skipping tiny_conv conv" in line for line in lines)
    assert "skipped tiny_conv conv" in format_table(result)


def test_bench_ops_real_nn_if_present() -> None:
    # Whatever approxsim.nn is right now: conv rows if it imports, a recorded skip if not.
    result = bench_ops(problems="tiny_conv", reps=REPS, warmup=WARMUP, native_settings=HERE)
    ops = {r["op"] for r in result["rows"]}
    assert "gemm" in ops
    assert ("conv" in ops) != bool(result["skipped"])


def test_bench_ops_leaves_thread_settings(stub_nn: None) -> None:
    before = torch.get_num_threads()
    result = bench_ops(problems=["tiny_gemm"], threads=1, reps=1, warmup=0, native_settings=HERE)
    assert result["config"]["threads"] == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"problems": ["nope"]}, "unknown problem"),
        ({"problems": []}, "no problems"),
        ({"reps": 0}, "reps"),
        ({"warmup": -1}, "warmup"),
        ({"tf32": True}, "tf32"),
        ({"device": "mps"}, "not supported"),
    ],
)
def test_bench_ops_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(BenchError, match=match):
        bench_ops(**kwargs)


def test_bench_ops_cuda_unavailable() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(BenchError, match="CUDA is not available"):
        bench_ops(device="cuda", quick=True)


def test_bench_ops_unknown_multiplier() -> None:
    with pytest.raises(approxsim.MultiplierError):
        bench_ops("no_such_multiplier", quick=True)


def test_cli_handler_writes_json(
    stub_nn: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs" / "bench.json"
    argv = ["bench", "ops", "--quick", "--reps", "2", "--warmup", "1", "--threads", "1"]
    argv += ["--multiplier", "mbm5", "--json", str(out), "--native-settings", HERE]
    args = build_parser().parse_args(argv)
    assert (args.command, args.action) == ("bench", "ops")
    assert args.handler is run_bench_cli
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "approx GMAC/s" in captured.out and "tiny_gemm" in captured.out
    assert "[1/6]" in captured.err and "results written to" in captured.err
    data = json.loads(out.read_text())
    assert data["config"]["multiplier"] == "mbm5"
    assert data["config"]["threads"] == 1
    assert len(data["rows"]) == 6
    assert data["machine"]["versions"]["numba"]
    # The file is written whole: no temporary file is left beside it.
    assert sorted(p.name for p in out.parent.iterdir()) == ["bench.json"]


def test_cli_handler_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "ops", "--problems", "tiny_gemm,nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown problem 'nope'" in err and err.count("\n") == 1
    assert err.startswith("approxsim: error: ")
    assert main(["bench", "ops", "--quick", "--multiplier", "nope"]) == 2
    assert "approxsim: error:" in capsys.readouterr().err
    # The handler itself raises; the one error handler of approxsim.cli prints the line.
    with pytest.raises(BenchError, match="unknown problem"):
        run_bench_cli(build_parser().parse_args(["bench", "ops", "--problems", "nope"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "ops", "--reps", "0"])


def test_peak_memory_counts_what_a_call_allocates() -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc")
    size = 64 << 20

    def allocate() -> None:
        x = torch.ones(size // 4)  # touched, so resident
        del x

    peak = peak_bytes(allocate, torch.device("cpu"))
    assert peak is not None and size * 0.9 <= peak <= size * 1.5
    small = peak_bytes(lambda: torch.ones(16), torch.device("cpu"))
    assert small is not None and small < 8 << 20
    # Memory approxsim keeps between calls counts too: a recycled block, resident and idle
    # before the call, is released first and the call's own allocation measured.
    from approxsim.ops._scratch import recycled

    recycled((size // 4,)).fill_(1.0)  # kept, idle, resident
    again = peak_bytes(lambda: recycled((size // 4,)).fill_(1.0), torch.device("cpu"))
    assert again is not None and size * 0.9 <= again <= size * 1.5
    result = bench_ops(problems=["tiny_gemm"], reps=1, warmup=0, native_settings=HERE)
    for row in result["rows"]:
        assert isinstance(row["approx"]["peak_bytes"], int)
        assert isinstance(row["native"]["peak_bytes"], int)
    assert "peak MiB" in format_table(result)
