"""The ``approxsim multipliers`` command line, driven as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import approxsim
from approxsim.cli import main
from approxsim.multipliers import write_approxtrain_lut

MITCHELL_C = """
float mitchell_mul(float x, float y) {
    uint32_t a = *(uint32_t *)&x, b = *(uint32_t *)&y;
    uint32_t sign = (a ^ b) & 0x80000000u;
    int32_t e = (int32_t)((a >> 23) & 0xff) + (int32_t)((b >> 23) & 0xff) - 127;
    uint32_t f = (a & 0x7f0000u) + (b & 0x7f0000u);
    if (f >= 0x800000u) { e += 1; f -= 0x800000u; }
    uint32_t r = sign | ((uint32_t)e << 23) | f;
    return *(float *)&r;
}
"""


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPROXSIM_CACHE_DIR", str(tmp_path / "cache"))


def test_list_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["multipliers", "list", "mitchell*", "--kind", "float"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [f"mitchell{m}" for m in range(1, 12)]


def test_list_stats_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["multipliers", "list", "mbm7", "--stats", "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["name"] == "mbm7"
    want = approxsim.get_multiplier("mbm7").error_stats()["mean_abs_rel_error"]
    assert item["error_stats"]["mean_abs_rel_error"] == pytest.approx(want)


def test_show_with_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "m.png"
    assert main(["multipliers", "show", "mitchell7", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "11.1111%" in out  # Mitchell's worst case, -1/9
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_show_c_model_matches_builtin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "mitchell.c"
    src.write_text(MITCHELL_C)
    args = ["multipliers", "show", "--c", str(src), "--function", "mitchell_mul"]
    assert main([*args, "--mantissa-bits", "7", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fingerprint"] == approxsim.get_multiplier("mitchell7").fingerprint
    assert info["provenance"]["decomposability"]["mismatches"] == 0


def test_show_approxtrain_lut_and_save(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lut = tmp_path / "MBM_7.bin"
    write_approxtrain_lut(approxsim.get_multiplier("mbm7"), lut)
    saved = tmp_path / "mbm.npz"
    assert main(["multipliers", "show", "--approxtrain-lut", str(lut), "--save", str(saved)]) == 0
    capsys.readouterr()
    loaded = approxsim.Multiplier.load(saved)
    assert np.array_equal(loaded.lut.numpy(), approxsim.get_multiplier("mbm7").lut.numpy())
    assert main(["multipliers", "show", "--lut", str(saved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "MBM_7"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["multipliers", "show", "nope7"], "unknown multiplier"),
        (["multipliers", "show"], "name exactly one multiplier"),
        (["multipliers", "show", "mbm7", "--approxtrain-lut", "x_7.bin"], "exactly one"),
        (["multipliers", "show", "--c", "missing.c", "--function", "f"], "--mantissa-bits"),
        (
            ["multipliers", "show", "--c", "missing.c", "--function", "f", "--mantissa-bits", "7"],
            "not found",
        ),
        (["multipliers", "show", "--approxtrain-lut", "nothere_7.bin"], "not found"),
        (["multipliers", "list", "zzz*"], "no multiplier matches"),
        (["multipliers", "show", "fp32", "--plot", "x.png"], "exact"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("approxsim: error:")
    assert message in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------- outputs (issue 14)
def test_show_save_refuses_an_existing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "m.npz"
    saved.write_bytes(b"an earlier result")
    assert main(["multipliers", "show", "mbm7", "--save", str(saved)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("approxsim: error:") and "--overwrite" in err and err.count("\n") == 1
    assert saved.read_bytes() == b"an earlier result"
    assert main(["multipliers", "show", "mbm7", "--save", str(saved), "--overwrite"]) == 0
    assert approxsim.Multiplier.load(saved).name == "mbm7"


def test_show_never_writes_over_its_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "m.npz"
    assert main(["multipliers", "show", "mbm7", "--save", str(saved)]) == 0
    before = saved.read_bytes()
    argv = ["multipliers", "show", "--lut", str(saved), "--save", str(saved), "--overwrite"]
    assert main(argv) == 2
    assert "is an input of this command" in capsys.readouterr().err
    assert saved.read_bytes() == before


def test_show_plot_refuses_existing_file_folder_and_bad_suffix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    png = tmp_path / "m.png"
    png.write_bytes(b"an earlier figure")

    def never(*args: object, **kw: object) -> None:
        raise AssertionError("the outputs are checked before the multiplier is built")

    with monkeypatch.context() as m:
        m.setattr("approxsim.cli.multipliers.multiplier_from_args", never)
        for target, message in [
            (png, "exists; pass --overwrite"),
            (tmp_path, "is a folder"),
            (tmp_path / "m.xyz", "'.xyz' is not an image format"),
        ]:
            assert main(["multipliers", "show", "mitchell7", "--plot", str(target)]) == 2
            err = capsys.readouterr().err
            assert err.startswith("approxsim: error:") and message in err, err
            assert err.count("\n") == 1 and "Traceback" not in err
        argv = ["multipliers", "show", "mitchell7", "--plot", str(png), "--save", str(png)]
        assert main([*argv, "--overwrite"]) == 2
        assert "both name" in capsys.readouterr().err
    assert png.read_bytes() == b"an earlier figure"
    assert main(["multipliers", "show", "mitchell7", "--plot", str(png), "--overwrite"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
