"""No ``cim`` command destroys a file it was not asked to replace (DESIGN §6): existing outputs
are refused without ``--overwrite`` (or ``--resume``), inputs are never written over, and both
are checked before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

import approxsim.cli.cim_commands as commands
from approxsim._io import OutputExistsError
from approxsim.cim import CIMError, DeviceConfig, SearchConfig, run_monte_carlo, run_sweep
from approxsim.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _common(run: Path, data: Path) -> list[str]:
    return ["--checkpoint", str(run), "--data-dir", str(data), "--no-progress", "--threads", "1"]


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a checkpoint fails: a refusal must come before any work."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checkpoint was loaded before the outputs were checked")

    monkeypatch.setattr(commands, "load_trained", refuse)


def _mc(run: Path, data: Path, *extra: str) -> list[str]:
    return ["cim", "mc", *_common(run, data), "--sigma", "0.2", "--samples", "2", *extra]


def _attack(run: Path, data: Path, *extra: str) -> list[str]:
    return ["cim", "attack", *_common(run, data), "--eps", "0.05", "--steps", "2",
            "--restarts", "1", *extra]  # fmt: skip


# ------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("action", ["mc-out", "mc-save-worst", "attack-out", "attack-save"])
def test_checkpoint_is_never_an_output(
    std_run: Path,
    fashion_dir: Path,
    capsys: pytest.CaptureFixture[str],
    no_loading: None,
    action: str,
    overwrite: list[str],
) -> None:
    ckpt = std_run / "checkpoint.pt"
    before = ckpt.read_bytes()
    cmd, opt = action.split("-", 1)
    build = _mc if cmd == "mc" else _attack
    rc, _, err = _run(capsys, *build(std_run, fashion_dir, f"--{opt}", str(ckpt), *overwrite))
    assert rc == 2 and "is an input of this command" in err and "\n" not in err.strip()
    assert ckpt.read_bytes() == before


# ------------------------------------------------------------------------------ existing files
@pytest.mark.parametrize(
    "build,opt", [(_mc, "--out"), (_mc, "--save-worst"), (_attack, "--out"), (_attack, "--save")]
)
def test_existing_output_is_refused_before_any_work(
    tmp_path: Path,
    std_run: Path,
    fashion_dir: Path,
    capsys: pytest.CaptureFixture[str],
    no_loading: None,
    build: object,
    opt: str,
) -> None:
    keep = tmp_path / "earlier-result"
    keep.write_text("30 chips of work")
    rc, _, err = _run(capsys, *build(std_run, fashion_dir, opt, str(keep)))  # type: ignore[operator]
    assert rc == 2 and "exists; pass" in err and "--overwrite" in err
    assert keep.read_text() == "30 chips of work"


def test_mc_overwrite_replaces_and_resume_continues(
    tmp_path: Path, std_run: Path, fashion_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, worst = tmp_path / "mc.json", tmp_path / "worst.pt"
    out.write_text("old")
    worst.write_text("old")
    args = _mc(std_run, fashion_dir, "--out", str(out), "--save-worst", str(worst))
    assert _run(capsys, *args, "--overwrite")[0] == 0
    first = json.loads(out.read_text())
    assert first["complete"] and first["worst_chip_file"] == str(worst)
    # Resuming (extending) the run may replace its own result and worst-chip files.
    rc, _, _ = _run(capsys, *args[:-2], "--samples", "3", "--save-worst", str(worst), "--resume")
    assert rc == 0 and len(json.loads(out.read_text())["accuracies"]) == 3
    # ...but not a worst-chip file it did not write.
    other = tmp_path / "other.pt"
    other.write_text("keep")
    rc, _, err = _run(
        capsys, *_mc(std_run, fashion_dir, "--samples", "4", "--out", str(out),
                     "--save-worst", str(other), "--resume"),
    )  # fmt: skip
    assert rc == 2 and "other.pt exists" in err and other.read_text() == "keep"
    rc, _, err = _run(capsys, *args, "--resume", "--overwrite")
    assert rc == 2 and "pass one" in err


def test_same_file_for_two_outputs_is_refused(
    tmp_path: Path,
    std_run: Path,
    fashion_dir: Path,
    capsys: pytest.CaptureFixture[str],
    no_loading: None,
) -> None:
    f = str(tmp_path / "x")
    rc, _, err = _run(capsys, *_mc(std_run, fashion_dir, "--out", f, "--save-worst", f))
    assert rc == 2 and "same file" in err
    rc, _, err = _run(capsys, *_attack(std_run, fashion_dir, "--out", f, "--save", f))
    assert rc == 2 and "same file" in err


def test_attack_overwrite_replaces(
    tmp_path: Path, std_run: Path, fashion_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save, res = tmp_path / "p.pt", tmp_path / "attack.json"
    save.write_text("old")
    res.write_text("old")
    rc, _, _ = _run(
        capsys, *_attack(std_run, fashion_dir, "--save", str(save), "--out", str(res),
                         "--overwrite"),
    )  # fmt: skip
    assert rc == 0 and json.loads(res.read_text())["perturbation_file"] == str(save)


@pytest.mark.parametrize("existing", ["sweep.png", "sweep.json"])
def test_sweep_refuses_an_existing_figure_or_result(
    tmp_path: Path,
    std_run: Path,
    fashion_dir: Path,
    capsys: pytest.CaptureFixture[str],
    no_loading: None,
    existing: str,
) -> None:
    (tmp_path / existing).write_text("earlier sweep")
    rc, _, err = _run(
        capsys, "cim", "sweep", *_common(std_run, fashion_dir), "--eps", "0.01",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert rc == 2 and f"{existing} exists" in err
    assert (tmp_path / existing).read_text() == "earlier sweep"
    file_out = tmp_path / "a-file"
    file_out.write_text("x")
    rc, _, err = _run(
        capsys, "cim", "sweep", *_common(std_run, fashion_dir), "--eps", "0.01",
        "--out", str(file_out),
    )  # fmt: skip
    assert rc == 2 and "is a file" in err


# ------------------------------------------------------------------------------ the library
def test_run_monte_carlo_follows_the_rule(
    tmp_path: Path, trained_mlp: nn.Module, blobs: tuple
) -> None:
    _, held = blobs
    cfg = DeviceConfig(sigma=0.2)
    out = tmp_path / "mc.json"
    out.write_text("earlier")
    with pytest.raises(OutputExistsError, match="exists"):
        run_monte_carlo(trained_mlp, held, cfg, samples=2, out=out)
    assert out.read_text() == "earlier"
    run = run_monte_carlo(trained_mlp, held, cfg, samples=2, out=out, overwrite=True)
    assert json.loads(out.read_text()) == run.document
    ckpt = tmp_path / "model.pt"
    ckpt.write_text("weights")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(OutputExistsError, match="input"):
            run_monte_carlo(trained_mlp, held, cfg, samples=2, out=ckpt, inputs=[ckpt], **flags)
        with pytest.raises(OutputExistsError, match="input"):
            run_monte_carlo(
                trained_mlp, held, cfg, samples=2, out=tmp_path / "r.json", save_worst=ckpt,
                inputs=[ckpt], **flags,
            )  # fmt: skip
    assert ckpt.read_text() == "weights"


def test_temporaries_of_a_killed_run_are_cleaned(
    tmp_path: Path, trained_mlp: nn.Module, blobs: tuple
) -> None:
    _, held = blobs
    out, worst = tmp_path / "mc.json", tmp_path / "worst.pt"
    stale = [tmp_path / ".mc.json.k9x2.tmp", tmp_path / ".worst.pt.abc.tmp"]
    for t in stale:
        t.write_text("half a file, from kill -9 during a write")
    other = tmp_path / ".notes.txt.abc.tmp"  # another file's temporary: not ours to remove
    other.write_text("x")
    run_monte_carlo(
        trained_mlp, held, DeviceConfig(sigma=0.2), samples=2, out=out, resume=True,
        save_worst=worst,
    )  # fmt: skip
    assert not any(t.exists() for t in stale) and other.exists()


# ------------------------------------------------------------------- altered files to resume
@pytest.mark.parametrize("accuracies", [["x"], [0.5, float("nan")], [1.5], "0.5", [True]])
def test_resuming_an_altered_result_is_a_clear_error(
    tmp_path: Path, trained_mlp: nn.Module, blobs: tuple, accuracies: object
) -> None:
    _, held = blobs
    cfg = DeviceConfig(sigma=0.2)
    out = tmp_path / "mc.json"
    run = run_monte_carlo(trained_mlp, held, cfg, samples=1, out=out)
    out.write_text(json.dumps({**run.document, "accuracies": accuracies}))
    with pytest.raises(CIMError, match="accuracies are not a list of numbers"):
        run_monte_carlo(trained_mlp, held, cfg, samples=2, out=out, resume=True)


@pytest.mark.parametrize(
    "models", [[{"points": []}], "x", [{"label": "m", "points": [{"eps": "a"}]}], [3]]
)
def test_continuing_an_altered_sweep_is_a_clear_error(
    trained_mlp: nn.Module, blobs: tuple, models: object
) -> None:
    attack, held = ((x[:16], y[:16]) for x, y in blobs)
    kw = {"config": DeviceConfig(), "mc_samples": 1, "search": SearchConfig(eps=1.0, steps=1)}
    doc = run_sweep([("m", trained_mlp)], attack, held, [0.1], **kw)  # type: ignore[arg-type]
    with pytest.raises(CIMError, match="does not hold a sweep"):
        run_sweep(
            [("m", trained_mlp)], attack, held, [0.1], previous={**doc, "models": models},
            **kw,  # type: ignore[arg-type]
        )  # fmt: skip
