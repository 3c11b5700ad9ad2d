"""``approxsim bench ... --json FILE`` follows the one output rule (issue 14): an existing file
is replaced only with ``--overwrite``, never a folder or the command's own input, and the
check comes before the timing, so a refusal costs nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from approxsim.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mitchell.c"

COMMANDS = {
    "ops": ["bench", "ops", "--quick"],
    "direct": ["bench", "direct", "--c", str(EXAMPLE), "--function", "f", "--mantissa-bits", "7"],
    "models": ["bench", "models"],
}
RUNNERS = {"ops": "bench_ops", "direct": "bench_direct", "models": "bench_models"}
TABLES = {"ops": "format_table", "direct": "format_direct_table", "models": "format_models_table"}


@pytest.fixture
def fake_bench(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Benchmarks that record their call and return at once (no timing in these tests)."""
    calls: list[str] = []
    for action, runner in RUNNERS.items():

        def run(*args: Any, _action: str = action, **kw: Any) -> dict[str, Any]:
            calls.append(_action)
            return {"fake": _action}

        monkeypatch.setattr(f"approxsim.cli.bench.{runner}", run)
        monkeypatch.setattr(f"approxsim.cli.bench.{TABLES[action]}", lambda r: "table")
    return calls


@pytest.mark.parametrize("action", list(COMMANDS))
def test_json_output_rule(
    action: str, tmp_path: Path, fake_bench: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    out.write_text("an earlier result")
    argv = COMMANDS[action]
    for target, message in [(out, "exists; pass --overwrite"), (tmp_path, "is a folder")]:
        assert main([*argv, "--json", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("approxsim: error:") and message in err and err.count("\n") == 1
    assert fake_bench == [] and out.read_text() == "an earlier result"  # nothing was timed
    assert main([*argv, "--json", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text()) == {"fake": action} and fake_bench == [action]


def test_direct_never_writes_over_its_model(
    tmp_path: Path, fake_bench: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model.c"
    model.write_text(EXAMPLE.read_text())
    argv = ["bench", "direct", "--c", str(model), "--function", "f", "--mantissa-bits", "7"]
    assert main([*argv, "--json", str(model), "--overwrite"]) == 2
    assert "is an input of this command" in capsys.readouterr().err
    assert model.read_text() == EXAMPLE.read_text() and fake_bench == []
