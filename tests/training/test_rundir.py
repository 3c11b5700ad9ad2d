"""The run folder's writer and reader (:mod:`approxsim.training.rundir`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from approxsim.training import TrainError
from approxsim.training.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    RunFolderError,
    append_metrics,
    check_run_folder,
    clear_run_files,
    prepare_run_folder,
    read_config,
    read_metrics,
    read_run,
    remove_stale_temporaries,
    write_config,
    write_metrics,
)

ROLES = ("forward", "grad_input", "grad_weight")


def _meta() -> dict:
    names = {role: {"name": "fp32"} for role in ("forward", "grad_input", "grad_weight")}
    return {"config": {"model": "lenet5", "seed": 0}, "multipliers": names}


def test_written_files_read_back(tmp_path: Path) -> None:
    prepare_run_folder(tmp_path / "run", resume=False, overwrite=False)
    out = tmp_path / "run"
    write_config(out, _meta())
    write_metrics(out, [{"epoch": 1, "test_acc": 0.5}])
    append_metrics(out, {"epoch": 2, "test_acc": 0.6})
    run = read_run(out)
    assert run.config == {"model": "lenet5", "seed": 0} and run.multipliers["forward"] == "fp32"
    assert [r["epoch"] for r in run.history] == [1, 2]
    assert read_config(out) == _meta() and read_config(tmp_path) is None
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, METRICS_FILE]


def test_truncated_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / METRICS_FILE
    path.write_text('{"epoch": 2}\n{"epoch": 1}\n\n{"epoch": 3, "tra')
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]  # in epoch order
    path.write_text('{"epoch": 1}\n{"loss": 1}\n{"epoch": 2}\n')
    with pytest.raises(RunFolderError, match="line 2 is not a metrics record"):
        read_metrics(path)
    assert read_metrics(tmp_path / "nothing") == []


def test_read_run_errors(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="not a folder"):
        read_run(tmp_path / "missing")
    with pytest.raises(RunFolderError, match="not a training run"):
        read_run(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"config": {}}))
    with pytest.raises(RunFolderError, match="malformed"):
        read_run(tmp_path)


def test_prepare_keeps_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / METRICS_FILE).write_text("")
    (tmp_path / f".{CONFIG_FILE}.abc123.tmp").write_text("")  # left by a killed write
    with pytest.raises(TrainError, match="not empty"):
        prepare_run_folder(tmp_path, resume=False, overwrite=False)
    with pytest.raises(TrainError, match="holds other files .notes.txt"):
        prepare_run_folder(tmp_path, resume=True, overwrite=False)
    prepare_run_folder(tmp_path, resume=False, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    (tmp_path / "notes.txt").unlink()
    (tmp_path / METRICS_FILE).write_text("")
    prepare_run_folder(tmp_path, resume=True, overwrite=False)  # only run files: cleared
    assert not list(tmp_path.iterdir())
    (tmp_path / "file").write_text("")
    with pytest.raises(TrainError, match="is a file"):
        prepare_run_folder(tmp_path / "file", resume=False, overwrite=False)


def test_check_touches_nothing_and_clear_only_run_files(tmp_path: Path) -> None:
    names = ["checkpoint.pt", CONFIG_FILE, METRICS_FILE, ".checkpoint.pt.k9.tmp", "notes.txt"]
    names.append(".notes.txt.x1.tmp")  # someone else's temporary: not the run's
    for name in names:
        (tmp_path / name).write_text(name)
    check_run_folder(tmp_path, resume=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".checkpoint.pt.k9.tmp"]
    clear_run_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.txt.x1.tmp", "notes.txt"]
    clear_run_files(tmp_path / "new")
    assert (tmp_path / "new").is_dir()
    check_run_folder(tmp_path / "absent", resume=False, overwrite=False)
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize(
    "meta",
    [
        {"config": [], "multipliers": {r: {"name": "fp32"} for r in ROLES}},
        {"config": {}, "multipliers": {r: {"name": 5} for r in ROLES}},
    ],
    ids=["config-list", "name-number"],
)
def test_read_run_checks_the_kinds_of_its_sections(tmp_path: Path, meta: dict) -> None:
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(RunFolderError, match="malformed"):
        read_run(tmp_path)
