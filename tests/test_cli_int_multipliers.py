"""``approxsim multipliers list|show`` with integer multipliers, driven as a user would, and the
integer multiplier options of ``cli/common.py``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from approxsim.cli import main
from approxsim.cli.common import (
    add_multiplier_arguments,
    any_multiplier_from_args,
    int_multiplier_from_args,
    wants_int_multiplier,
)
from approxsim.multipliers import Multiplier, MultiplierError
from approxsim.multipliers.integer import IntMultiplier
from approxsim.multipliers.registry import get_int_multiplier

sys.path.insert(0, str(Path(__file__).parent / "multipliers"))
from int_c_sources import SIGNED_S8, TRUNC6_HEADER, TRUNC6_U8  # noqa: E402


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPROXSIM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def trunc6_file(tmp_path: Path) -> Path:
    path = tmp_path / "mul8u_TTR6.c"
    path.write_text(TRUNC6_U8)
    return path


def test_list_shows_integer_builtins_with_fingerprint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["multipliers", "list", "drum4*", "--kind", "int"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[:2] for ln in lines] == [["drum4_s8", "s8"], ["drum4_u8", "u8"]]
    assert lines[1].split()[2] == get_int_multiplier("drum4_u8").fingerprint[:12]


def test_list_all_kinds_and_stats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["multipliers", "list", "*8"]) == 0
    names = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()]
    assert "bf16" not in names and {"mitchell8", "uint8", "int8", "trunc8_u8"} <= set(names)
    assert main(["multipliers", "list", "uint8", "--stats"]) == 0
    out = capsys.readouterr().out
    assert "MAE%" in out and "EP%" in out and "uint8" in out and "0.0000" in out


def test_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["multipliers", "list", "trunc6_s8", "--stats", "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    m = get_int_multiplier("trunc6_s8")
    assert item["kind"] == "integer" and item["bits"] == 8 and item["signed"] is True
    assert item["fingerprint"] == m.fingerprint
    assert item["error_stats"] == pytest.approx(m.error_stats())


def test_show_builtin_integer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["multipliers", "show", "drum4_s8"]) == 0
    out = capsys.readouterr().out
    m = get_int_multiplier("drum4_s8")
    assert f"fingerprint  {m.fingerprint}" in out
    assert "8-bit signed (two's complement), -128..127" in out
    assert f"{m.error_stats()['mre_percent']:.3f}" in out


def test_show_evoapprox_with_plot_and_save(
    trunc6_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, npz = tmp_path / "heat.png", tmp_path / "m.npz"
    args = ["multipliers", "show", "--evoapprox", str(trunc6_file)]
    assert main([*args, "--plot", str(png), "--save", str(npz)]) == 0
    out = capsys.readouterr().out
    assert "mul8u_TTR6" in out and "uint16_t mul8u_TTR6(uint8_t a, uint8_t b)" in out
    assert "MAE%            0.1225 printed, 0.122452 computed: match" in out
    assert "PDK45_PWR        0.301 mW" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = IntMultiplier.load(npz)
    # The test file's circuit is the truncated-columns design the library builds in.
    assert saved.fingerprint == get_int_multiplier("trunc6_u8").fingerprint
    assert f"fingerprint  {saved.fingerprint}" in out
    # The saved file is shown like a built-in, and is not overwritten without --overwrite.
    assert main(["multipliers", "show", "--lut", str(npz), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fingerprint"] == saved.fingerprint
    assert main([*args, "--save", str(npz)]) == 2
    assert "exists" in capsys.readouterr().err


def test_show_refused_header_names_the_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "mul8u_TTR6.c"
    bad.write_text(
        TRUNC6_U8.replace(TRUNC6_HEADER, TRUNC6_HEADER.replace("WCE = 321", "WCE = 400"))
    )
    assert main(["multipliers", "show", "--evoapprox", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "WCE = 400 printed, 321 computed" in err and len(err.strip().splitlines()) == 1


def test_show_c_integer_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "sgn.c"
    src.write_text(SIGNED_S8)
    args = ["multipliers", "show", "--c", str(src), "--function", "mul8s_TSGN"]
    assert main([*args, "--bits", "8", "--signed", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["signed"] is True and info["error_stats"]["wce"] == 15
    # Read unsigned, the same file is another (much worse) multiplier.
    assert main([*args, "--bits", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["error_stats"]["wce"] > 15


def test_bits_versus_mantissa_bits(trunc6_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["multipliers", "show", "--c", str(trunc6_file), "--function", "mul8u_TTR6"]
    assert main(base) == 2
    assert "--mantissa-bits M (a float model; an integer one takes --bits B)" in (
        capsys.readouterr().err
    )
    assert main([*base, "--bits", "8", "--mantissa-bits", "4"]) == 2
    assert "takes --bits B" in capsys.readouterr().err
    assert main(["multipliers", "show", "--evoapprox", str(trunc6_file), "--signed"]) == 2
    assert "--bits and --signed go with --c FILE" in capsys.readouterr().err
    assert main(["multipliers", "show", "drum4_u8", "--evoapprox", str(trunc6_file)]) == 2
    assert "name exactly one multiplier" in capsys.readouterr().err


def _parser(**kw: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_multiplier_arguments(parser, integer=True, **kw)
    return parser


def test_int_multiplier_options_for_other_commands(trunc6_file: Path, tmp_path: Path) -> None:
    parser = _parser()
    args = parser.parse_args(["--int-multiplier", "drum4_u8"])
    assert wants_int_multiplier(args)
    assert int_multiplier_from_args(args) is get_int_multiplier("drum4_u8")
    args = parser.parse_args(["--evoapprox", str(trunc6_file)])
    assert int_multiplier_from_args(args).name == "mul8u_TTR6"
    saved = get_int_multiplier("trunc4_s8").save(tmp_path / "t.npz")
    args = parser.parse_args(["--int-multiplier", str(saved)])
    assert int_multiplier_from_args(args).fingerprint == get_int_multiplier("trunc4_s8").fingerprint
    args = parser.parse_args(["--c", str(trunc6_file), "--function", "mul8u_TTR6", "--bits", "8"])
    m = int_multiplier_from_args(args)
    assert isinstance(m, IntMultiplier) and m.signed is False
    np.testing.assert_array_equal(m.table.numpy(), get_int_multiplier("trunc6_u8").table.numpy())
    # Float options still build float multipliers; no integer option means a float one.
    args = parser.parse_args(["--multiplier", "mitchell7"])
    assert not wants_int_multiplier(args)
    assert isinstance(any_multiplier_from_args(args), Multiplier)
    with pytest.raises(MultiplierError, match="exactly one integer multiplier"):
        int_multiplier_from_args(parser.parse_args([]))
    with pytest.raises(MultiplierError, match="apply to float --c models"):
        int_multiplier_from_args(
            parser.parse_args(["--int-multiplier", "int8", "--rounding", "nearest"])
        )
    with pytest.raises(MultiplierError, match="--function F and --bits B"):
        int_multiplier_from_args(parser.parse_args(["--c", str(trunc6_file), "--signed"]))
