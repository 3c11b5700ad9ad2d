"""``approxsim bench ops`` with an integer multiplier: integer GEMM rows, forward only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from approxsim.bench import bench_ops, format_table
from approxsim.cli import main
from approxsim.multipliers.integer import IntMultiplier


def test_bench_ops_times_the_integer_gemm() -> None:
    m = IntMultiplier.exact(8, True)
    # Native in a child process: the integer operands are rebuilt there from their range.
    result = bench_ops(m, "tiny_gemm,tiny_conv", reps=1, warmup=0, native_settings="passive")
    assert result["config"]["multiplier_kind"] == "int"
    assert result["config"]["multiplier_fingerprint"] == m.fingerprint
    assert [(r["problem"], r["op"], r["pass"]) for r in result["rows"]] == [
        ("tiny_gemm", "gemm", "forward"),
        ("tiny_conv", "gemm", "forward"),
    ]
    # The exact int8 multiplier on integer values: float32 of the same values agrees.
    assert all(r["forward_rel_error"] < 1e-6 for r in result["rows"])
    assert [s["op"] for s in result["skipped"]] == ["conv"]
    # Points to what does time quantized layers (it named a bench command that does not).
    assert "scripts/bench_quant.py" in result["skipped"][0]["reason"]
    assert f"table {m.fingerprint[:12]}" in format_table(result)
    for row in result["rows"]:
        assert list(row["native_by_setting"]) == ["passive"] and row["native_setting"] == "passive"


def test_cli_int_multiplier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "int.json"
    argv = ["bench", "ops", "--int-multiplier", "uint8", "--problems", "tiny_gemm"]
    here = ["--native-settings", "same-process"]
    assert main([*argv, "--reps", "1", "--warmup", "0", *here, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["multiplier"] == "uint8"
    assert data["rows"][0]["pass"] == "forward"
    assert "uint8 (integer, table" in capsys.readouterr().out
    assert main([*argv, "--multiplier", "mitchell7"]) == 2
    assert "name one multiplier" in capsys.readouterr().err
