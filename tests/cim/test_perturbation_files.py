"""Perturbation files carry the checkpoints' integrity scheme (a header line and the SHA-256
of the payload) and are validated on load; ``cim eval --perturbation`` refuses device options
that contradict the file."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from approxsim.cim import CIMError, DeviceConfig, Perturbation, sample_perturbation
from approxsim.cim.chip import PERTURBATION_FORMAT
from approxsim.cli import main


@pytest.fixture
def saved(tmp_path: Path, trained_mlp: nn.Module) -> tuple[Path, Perturbation]:
    pert = sample_perturbation(trained_mlp, DeviceConfig(sigma=0.2), seed=3)
    return pert.save(tmp_path / "p.pt"), pert


def legacy_file(path: Path, state: dict[str, Any]) -> Path:
    """A perturbation file as written before the header: a bare torch file."""
    buf = io.BytesIO()
    torch.save(state, buf)
    path.write_bytes(buf.getvalue())
    return path


def good_state(pert: Perturbation) -> dict[str, Any]:
    return {
        "format": PERTURBATION_FORMAT,
        "config": pert.config.to_dict(),
        "deviations": dict(pert.deviations),
        "digest": pert.digest,
        "meta": dict(pert.meta),
    }


def test_file_starts_with_a_header_and_checksum(saved: tuple[Path, Perturbation]) -> None:
    path, _ = saved
    head, digest, _ = path.read_bytes().split(b"\n", 2)
    assert head == b"APPROXSIM-CIM-PERTURBATION/1" and len(digest) == 64


@pytest.mark.parametrize("where", [0.5, 0.9, -1])
def test_a_flipped_byte_is_detected(saved: tuple[Path, Perturbation], where: float) -> None:
    path, _ = saved
    raw = bytearray(path.read_bytes())
    i = int(len(raw) * where) if where > 0 else len(raw) - 1
    raw[i] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CIMError, match="damaged.*regenerate"):
        Perturbation.load(path)


def test_a_truncated_file_is_detected(saved: tuple[Path, Perturbation]) -> None:
    path, _ = saved
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CIMError, match="damaged"):
        Perturbation.load(path)


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_text("hello")
    with pytest.raises(CIMError, match="not an approxsim CIM perturbation"):
        Perturbation.load(tmp_path / "x.pt")


def test_files_without_the_header_still_load(
    tmp_path: Path, saved: tuple[Path, Perturbation]
) -> None:
    _, pert = saved
    back = Perturbation.load(legacy_file(tmp_path / "old.pt", good_state(pert)))
    assert back.config == pert.config and back.digest == pert.digest
    assert all(torch.equal(back.deviations[k], v) for k, v in pert.deviations.items())


def _nan(s: dict[str, Any]) -> None:
    name = next(iter(s["deviations"]))
    s["deviations"][name] = s["deviations"][name].clone()
    s["deviations"][name][0].view(-1)[0] = float("nan")


def _inf(s: dict[str, Any]) -> None:
    name = next(iter(s["deviations"]))
    s["deviations"][name] = torch.full_like(s["deviations"][name], float("-inf"))


BAD_CONTENTS = [
    (lambda s: s.pop("deviations"), "lacks \\['deviations'\\]"),
    (lambda s: s.pop("config"), "lacks \\['config'\\]"),
    (_nan, "1 non-finite value"),
    (_inf, "non-finite"),
    (lambda s: s.update(config={"weight_bits": 8, "colour": "red"}), "invalid device model"),
    (lambda s: s.update(config={"weight_bits": -3}), "invalid device model"),
    (lambda s: s.update(config=[1, 2]), "device model of type list"),
    (lambda s: s.update(deviations=[1.0]), "deviations of type list"),
    (lambda s: s.update(deviations={"0": [1.0, 2.0]}), "deviations are tensors"),
    (lambda s: s.update(deviations={"0": torch.zeros(4, 3, dtype=torch.int64)}), "int64"),
    (lambda s: s.update(deviations={"0": torch.zeros(3, 3)}), "devices per weight"),
    (lambda s: s.update(digest="not a digest"), "invalid weights digest"),
    (lambda s: s.update(meta=[1]), "meta"),
]


@pytest.mark.parametrize("break_it,message", BAD_CONTENTS)
def test_invalid_contents_are_refused_by_name(
    tmp_path: Path, saved: tuple[Path, Perturbation], break_it: Any, message: str
) -> None:
    _, pert = saved
    state = good_state(pert)
    break_it(state)
    for path in (
        legacy_file(tmp_path / "old.pt", state),
        _sealed(tmp_path / "new.pt", state),  # a valid checksum over bad contents
    ):
        with pytest.raises(CIMError, match=message) as exc:
            Perturbation.load(path)
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def _sealed(path: Path, state: dict[str, Any]) -> Path:
    from approxsim._io import seal

    buf = io.BytesIO()
    torch.save(state, buf)
    path.write_bytes(seal(b"APPROXSIM-CIM-PERTURBATION/1\n", buf.getvalue()))
    return path


# ------------------------------------------------------------------- cim eval --perturbation
def _eval(run: Path, data: Path, pert: Path, *extra: str) -> list[str]:
    return ["cim", "eval", "--checkpoint", str(run), "--data-dir", str(data), "--no-progress",
            "--threads", "1", "--perturbation", str(pert), "--json", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def run_pert(std_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A perturbation of the standard run's model (4-bit weights on 2-bit devices)."""
    from approxsim.training import load_trained

    model = load_trained(std_run).model
    cfg = DeviceConfig(sigma=0.1, weight_bits=4, device_bits=2, mapping="differential")
    return sample_perturbation(model, cfg, seed=0).save(tmp_path_factory.mktemp("p") / "p.pt")


@pytest.mark.parametrize(
    "extra,clash",
    [
        (["--weight-bits", "8"], "--weight-bits 8 (the file has 4)"),
        (["--device-bits", "1"], "--device-bits 1 (the file has 2)"),
        (["--mapping", "sign-magnitude"], "--mapping sign-magnitude (the file has differential)"),
    ],
)
def test_eval_refuses_options_that_contradict_the_file(
    std_run: Path,
    fashion_dir: Path,
    run_pert: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    clash: str,
) -> None:
    rc = main(_eval(std_run, fashion_dir, run_pert, *extra))
    err = capsys.readouterr().err
    assert rc == 2 and clash in err and "another device layout" in err


def test_eval_takes_matching_or_no_layout_options(
    std_run: Path, fashion_dir: Path, run_pert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = []
    for extra in ([], ["--weight-bits", "4", "--device-bits", "2", "--mapping", "differential"]):
        assert main(_eval(std_run, fashion_dir, run_pert, *extra)) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["accuracy"] == results[1]["accuracy"]
    assert results[0]["device"]["weight_bits"] == 4
