"""``approxsim replay fidelity`` and ``approxsim replay bench`` at tiny sizes: the files they
write, priority files as input, and one-line errors for bad input and existing outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from approxsim.cli import main
from approxsim.replay.fidelity import FidelityError, load_td_errors

TINY = ["--n", "64", "--bits", "4", "--levels", "linear", "--no-progress"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_fidelity_writes_tables_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fid"
    rc, text, _ = _run(capsys, "replay", "fidelity", "--out", str(out), *TINY,
                       "--vectors", "half-normal", "--mc-draws", "640")  # fmt: skip
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {
        "fidelity.md", "fidelity.csv", "fidelity.json", "fidelity.png"
    }  # fmt: skip
    data = json.loads((out / "fidelity.json").read_text())
    rows = data["rows"]
    # uniform, PER, then knn/radius x 2 query rules at b=4, linear levels.
    assert [r["sampler"] for r in rows][:2] == ["uniform", "per-sumtree"] and len(rows) == 6
    assert rows[1]["tv"] == pytest.approx(0.0, abs=1e-12)
    assert all("mc_tv" in r for r in rows[2:])
    assert "| amper-knn | size_biased | linear |" in text
    assert "Monte Carlo check" in (out / "fidelity.md").read_text()
    # A second run into the same folder is refused, before any work, unless asked.
    rc, _, err = _run(capsys, "replay", "fidelity", "--out", str(out), *TINY)
    assert rc == 2 and "--overwrite" in err and err.count("\n") == 1
    assert _run(capsys, "replay", "fidelity", "--out", str(out), *TINY, "--overwrite")[0] == 0


def test_fidelity_reads_priority_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    td = torch.linspace(-2, 3, 80)
    torch.save(td, tmp_path / "step100.pt")
    np.save(tmp_path / "step200.npy", td.numpy())
    for name in ("step100.pt", "step200.npy"):
        torch.testing.assert_close(load_td_errors(tmp_path / name), td.abs().double())
    out = tmp_path / "fid"
    rc, _, _ = _run(capsys, "replay", "fidelity", "--out", str(out), *TINY,
                    "--priorities", str(tmp_path / "step100.pt"))  # fmt: skip
    assert rc == 0
    rows = json.loads((out / "fidelity.json").read_text())["rows"]
    assert {r["vector"] for r in rows} == {"step100.pt"} and rows[0]["n"] == 80


def test_bad_priority_files(tmp_path: Path) -> None:
    torch.save(torch.zeros(3, 3), tmp_path / "a.pt")
    with pytest.raises(FidelityError, match="1-D"):
        load_td_errors(tmp_path / "a.pt")
    (tmp_path / "b.pt").write_text("not a tensor")
    with pytest.raises(FidelityError, match="cannot read"):
        load_td_errors(tmp_path / "b.pt")
    with pytest.raises(FidelityError, match="does not exist"):
        load_td_errors(tmp_path / "c.npy")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bits", "9"], "--bits must lie in 4..8"),
        (["--radius", "-1"], "--radius"),
        (["--vectors", "cauchy"], "unknown priority vector"),
    ],
)
def test_fidelity_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    rc, _, err = _run(capsys, "replay", "fidelity", "--out", str(tmp_path / "f"), *TINY, *extra)
    assert rc == 2 and message in err and err.count("\n") == 1


def test_bench_writes_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    rc, text, _ = _run(capsys, "replay", "bench", "--out", str(out), "--sizes", "6",
                       "--batches", "8", "--repeats", "1", "--threads", "1",
                       "--no-progress")  # fmt: skip
    assert rc == 0
    data = json.loads(out.read_text())
    assert "cpu" in data["machine"] and data["device"] == "cpu"
    assert [r["sampler"] for r in data["rows"]] == [
        "uniform", "per-sumtree", "per-cumsum", "per-multinomial", "amper-knn", "amper-fr"
    ]  # fmt: skip
    tree = data["rows"][1]
    assert tree["cost"]["dependent_reads"] == 8 * 6 and tree["sample_ms"] > 0
    assert out.with_suffix(".md").exists() and "| per-sumtree | 2^6 | 8 |" in text
    rc, _, err = _run(capsys, "replay", "bench", "--out", str(out), "--samplers", "per-tree")
    assert rc == 2 and "unknown sampler" in err
