"""``approxsim bench direct`` and the direct-simulation GEMM of a compiled C model.

The direct loop must be the plain per-product simulation (checked against the model called
product by product, summed in k order), and the benchmark must report both engines on the
same products; timings are reported, never tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from approxsim.bench import Problem, bench_direct, format_direct_table
from approxsim.cli import main
from approxsim.multipliers.cmodel import load_cmodel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mitchell.c"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPROXSIM_CACHE_DIR", str(tmp_path / "approxsim-cache"))


def test_direct_gemm_is_the_per_product_loop() -> None:
    model = load_cmodel(EXAMPLE, "mitchell_mul")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 9)).astype(np.float32)
    b = rng.standard_normal((9, 4)).astype(np.float32)
    # Every product in one call to the model (each call is a child process), then float32
    # sums in k order, as the direct loop adds them.
    products = model(np.repeat(a[:, None, :], 4, axis=1), np.repeat(b.T[None, :, :], 5, axis=0))
    expected = np.zeros((5, 4), dtype=np.float32)
    for k in range(9):
        expected += products[:, :, k]
    assert np.array_equal(model.gemm(a, b), expected)
    assert np.array_equal(model.gemm(a, b, threads=3), expected)  # rows split, same sums
    with pytest.raises(ValueError, match="cannot multiply"):
        model.gemm(a, b.T)


def test_bench_direct_reports_both_engines(tmp_path: Path) -> None:
    tiny = Problem("tiny", "tiny GEMM", 16, 24, 8)
    lines: list[str] = []
    res = bench_direct(
        EXAMPLE, "mitchell_mul", 7, [tiny], reps=1, warmup=0, threads=2, progress=lines.append
    )
    (row,) = res["results"]
    assert row["problem"]["name"] == "tiny" and res["threads"] == 2
    for key in ("lut", "direct_1_thread", "direct_threads"):
        assert row[key]["median_s"] > 0 and row[key]["gmac_per_s"] > 0
    assert row["speedup_vs_1_thread"] > 0 and row["speedup_vs_threads"] > 0
    assert row["max_rel_diff"] < 1e-5  # the same products, summed in another order
    assert res["model"]["multiplier"] == "mitchell_mul@mitchell.c"
    assert any("direct, 1 thread" in line for line in lines)
    table = format_direct_table(res)
    assert "tiny" in table and "16x24x8" in table and "speed-up vs 1T" in table
    json.dumps(res)


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["bench", "direct", "--function", "mitchell_mul", "--mantissa-bits", "7"]
    assert main([*base, "--c", str(tmp_path / "none.c")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([*base, "--c", str(EXAMPLE), "--problems", "gemm9999"]) == 2
    assert "unknown problem" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*base, "--c", str(EXAMPLE), "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert main([*base[:3], "not_there", *base[4:], "--c", str(EXAMPLE)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("approxsim: error: function 'not_there'")


def test_cli_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d" / "direct.json"
    argv = ["bench", "direct", "--c", str(EXAMPLE), "--function", "mitchell_mul"]
    argv += ["--mantissa-bits", "7", "--problems", "tiny_gemm", "--reps", "1", "--warmup", "0"]
    assert main([*argv, "--threads", "1", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "approxsim bench direct: mitchell_mul (M=7)" in captured.out
    assert "tiny_gemm" in captured.out and "results written to" in captured.err
    assert json.loads(out.read_text())["results"][0]["problem"]["name"] == "tiny_gemm"
