"""Native PyTorch at its best (issue 16): the float32 baseline timed in one child process per
thread-wait setting, the fastest kept and every setting recorded; a setting the user made is
respected, never overridden; bad settings are refused before anything runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from approxsim._runtime import describe_environment, thread_environment
from approxsim.bench import BenchError, NativeBaselineError, bench_ops, format_table, native
from approxsim.bench import _native_child as child
from approxsim.cli import main


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPROXSIM_CACHE_DIR", str(tmp_path / "approxsim-cache"))


def _no_children(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make starting a child process fail the test; returns the calls (none expected)."""
    calls: list[Any] = []

    def refuse(*args: Any, **kw: Any) -> None:
        calls.append(args)
        raise AssertionError("a child process was started")

    monkeypatch.setattr(native, "run_child", refuse)
    return calls


def test_children_time_native_and_every_setting_is_recorded() -> None:
    result = bench_ops(problems="tiny_gemm", reps=2, warmup=0, native_settings="default,passive")
    cfg = result["config"]
    assert cfg["native_settings"] == ["default", "passive"]
    envs = cfg["native_environments"]
    assert "OMP_WAIT_POLICY" not in envs["default"]["environment"]
    assert envs["passive"]["environment"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert envs["default"]["torch_threads"] == envs["passive"]["torch_threads"] == cfg["threads"]
    assert result["machine"]["environment"] == thread_environment()  # approxsim: as it is
    assert len(result["rows"]) == 2
    for row in result["rows"]:
        by = row["native_by_setting"]
        assert list(by) == ["default", "passive"]
        for timing in by.values():
            assert len(timing["times_s"]) == 2 and timing["median_s"] > 0
        best = min(by, key=lambda s: by[s]["median_s"])
        assert row["native_setting"] == best and row["native"] == by[best]
        assert row["slowdown"] == pytest.approx(row["approx"]["median_s"] / by[best]["median_s"])
        # The child built the same operands: its forward is approxsim's reference here too.
        assert 0 < row["forward_rel_error"] < 0.2
    title = format_table(result).splitlines()[0]
    assert title.endswith(
        "native: best of OMP_WAIT_POLICY unset/PASSIVE (one child process each); "
        f"approxsim: {describe_environment(result['machine'])}"
    )
    json.dumps(result)


def test_a_user_set_wait_policy_is_respected(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert native.resolve_native_settings(None) == (native.AS_SET,)
    result = bench_ops(problems="tiny_gemm", reps=1, warmup=0)
    assert result["config"]["native_settings"] == [native.AS_SET]
    env = result["config"]["native_environments"][native.AS_SET]["environment"]
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert result["machine"]["environment"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert {row["native_setting"] for row in result["rows"]} == {native.AS_SET}
    assert (
        format_table(result)
        .splitlines()[0]
        .endswith(
            "native: OMP_WAIT_POLICY=PASSIVE (as set), in a child process; "
            "approxsim: OMP_WAIT_POLICY=PASSIVE"
        )
    )
    # Asking to time native under another policy would override the user: refused, at once.
    calls = _no_children(monkeypatch)
    out = tmp_path / "ops.json"
    argv = ["bench", "ops", "--quick", "--native-settings", "default,active"]
    assert main([*argv, "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "OMP_WAIT_POLICY=PASSIVE is set" in err and err.count("\n") == 1
    assert calls == [] and not out.exists()
    monkeypatch.delenv("OMP_WAIT_POLICY")
    # A saved result reads the same anywhere: its labels come from its record.
    table = format_table(json.loads(json.dumps(result))).splitlines()
    assert table[0].endswith(
        "native: OMP_WAIT_POLICY=PASSIVE (as set), in a child process; "
        "approxsim: OMP_WAIT_POLICY=PASSIVE"
    )
    assert table[3].rstrip().endswith("as set")
    monkeypatch.setenv("GOMP_SPINCOUNT", "0")  # also says how threads wait
    with pytest.raises(BenchError, match="GOMP_SPINCOUNT=0 is set"):
        native.resolve_native_settings("passive")
    assert native.resolve_native_settings("same-process") == ("same-process",)


@pytest.mark.parametrize(
    ("command", "value", "match"),
    [
        ("ops", "fast", "unknown native setting 'fast'"),
        ("ops", ",", "no native settings"),
        ("models", "passive,PASSIVE", "name one setting twice"),
        ("epoch", "same-process", "unknown native setting 'same-process'"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(
    command: str,
    value: str,
    match: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls = _no_children(monkeypatch)
    ran: list[str] = []
    for name in ("bench_ops", "bench_models", "bench_epoch"):
        monkeypatch.setattr(f"approxsim.cli.bench.{name}", lambda *a, _n=name, **k: ran.append(_n))
    out = tmp_path / "result.json"
    assert main(["bench", command, "--native-settings", value, "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert ran == [] and calls == [] and not out.exists()
    # The library refuses the same before timing anything.
    with pytest.raises(BenchError, match=match):
        native.resolve_native_settings(value, same_process=command != "epoch")


def test_bench_ops_checks_settings_before_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _no_children(monkeypatch)
    with pytest.raises(BenchError, match="unknown native setting 'spin'"):
        bench_ops(quick=True, native_settings=["passive", "spin"])
    assert calls == []


def test_a_failing_child_is_one_clear_error() -> None:
    lines: list[str] = []
    code = "print('@progress half way'); print('ValueError: the problem'); raise SystemExit(3)"
    with pytest.raises(NativeBaselineError, match=r"^native X failed \(exit status 3\): Value"):
        native.run_child([sys.executable, "-c", code], {}, "native X", lines.append)
    assert lines == ["native X: half way"]
    with pytest.raises(NativeBaselineError, match="could not start"):
        native.run_child(["/nonexistent/python"], {}, "native X", lines.append)


def test_the_child_entry_reports_a_bad_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = tmp_path / "task.json"
    task.write_text(json.dumps({"bench": "nope"}))
    assert child.main([str(task), str(tmp_path / "out.json")]) == 1
    assert "unknown benchmark 'nope'" in capsys.readouterr().out
    assert not (tmp_path / "out.json").exists()
    assert child.main([]) == 2


def test_child_environment_sets_only_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's thread count travels unchanged
    assert native.child_environment("passive")["OMP_WAIT_POLICY"] == "PASSIVE"
    assert native.child_environment("active")["OMP_WAIT_POLICY"] == "ACTIVE"
    env = native.child_environment("default")
    assert "OMP_WAIT_POLICY" not in env and env["OMP_NUM_THREADS"] == "1"
    src = str(Path(native.__file__).resolve().parents[2])
    assert env["PYTHONPATH"].split(":")[0] == src  # the child runs this copy of approxsim


def test_the_child_rebuilds_the_same_operands() -> None:
    # A child process gets the problem as JSON and the seed, and builds native alone: its
    # operands must be those approxsim is timed on.
    from approxsim.bench import ops
    from approxsim.bench.problems import PROBLEMS, Problem
    from approxsim.multipliers import get_multiplier

    cpu = torch.device("cpu")
    for name, op in (("tiny_gemm", "gemm"), ("tiny_conv", "conv")):
        problem = Problem.from_dict(json.loads(json.dumps(PROBLEMS[name].to_dict())))
        assert problem == PROBLEMS[name]
        _, alone = ops._form_paths(problem, op, None, None, cpu, 7)
        _, beside = ops._form_paths(problem, op, get_multiplier("mitchell7"), None, cpu, 7)
        assert torch.equal(alone.forward(), beside.forward())
    with pytest.raises(BenchError, match="not a problem description"):
        Problem.from_dict({"name": "x"})
