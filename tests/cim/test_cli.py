"""``approxsim cim``: every subcommand on a checkpoint written by ``approxsim train``, replay
of saved perturbations, resumed results, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from approxsim.cli import main

N_TEST = 64  # conftest's test split


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _common(run: Path, data: Path) -> list[str]:
    return ["--checkpoint", str(run), "--data-dir", str(data), "--no-progress", "--threads", "1"]


def test_mc_json_resume_and_worst_chip(
    tmp_path: Path, std_run: Path, fashion_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mc.json"
    args = ["cim", "mc", *_common(std_run, fashion_dir), "--sigma", "0.2", "--out", str(out)]
    rc, text, _ = _run(capsys, *args, "--samples", "3", "--save-worst", str(tmp_path / "w.pt"))
    assert rc == 0 and "p1" in text and "order statistics" in text
    first = json.loads(out.read_text())
    assert first["complete"] and len(first["accuracies"]) == 3 and first["method"] == "standard"
    rc, _, _ = _run(capsys, *args, "--samples", "5", "--resume")
    second = json.loads(out.read_text())
    assert rc == 0 and second["accuracies"][:3] == first["accuracies"]
    rc, fresh, _ = _run(capsys, *args[:-2], "--samples", "5", "--json")
    assert json.loads(fresh)["accuracies"] == second["accuracies"]
    # The saved worst chip replays to the worst accuracy.
    rc, text, _ = _run(
        capsys, "cim", "eval", *_common(std_run, fashion_dir), "--perturbation",
        str(tmp_path / "w.pt"), "--json",
    )  # fmt: skip
    assert rc == 0 and json.loads(text)["accuracy"] == min(first["accuracies"])


def test_attack_saves_a_perturbation_that_eval_replays(
    tmp_path: Path, std_run: Path, fashion_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p, res = tmp_path / "p.pt", tmp_path / "attack.json"
    rc, text, _ = _run(
        capsys, "cim", "attack", *_common(std_run, fashion_dir), "--eps", "0.05",
        "--steps", "5", "--restarts", "1", "--save", str(p), "--out", str(res),
    )  # fmt: skip
    assert rc == 0 and "held-out" in text and "optimized on this split" in text
    r = json.loads(res.read_text())
    assert r["data"] == {
        "attack": f"test[0:{N_TEST // 2}]",
        "heldout": f"test[{N_TEST // 2}:{N_TEST}]",
        "attack_samples": N_TEST // 2,
        "heldout_samples": N_TEST // 2,
    }
    assert r["perturbation_stats"]["max_abs_weight_delta"] <= 0.05 * (1 + 1e-6)
    rc, text, _ = _run(
        capsys, "cim", "eval", *_common(std_run, fashion_dir), "--perturbation", str(p),
        "--offset", str(N_TEST // 2), "--json",
    )  # fmt: skip
    ev = json.loads(text)
    assert rc == 0 and ev["accuracy"] == r["heldout_accuracy"]
    assert ev["data"] == {"split": "test", "offset": N_TEST // 2, "samples": N_TEST // 2}
    rc, text, _ = _run(
        capsys, "cim", "eval", *_common(std_run, fashion_dir), "--perturbation", str(p),
        "--max-samples", str(N_TEST // 2), "--json",
    )  # fmt: skip
    assert json.loads(text)["accuracy"] == r["attack_accuracy"]


def test_train_then_sweep_with_plot_and_resume(
    tmp_path: Path, std_run: Path, fashion_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noisy = tmp_path / "noise"
    rc, text, _ = _run(
        capsys, "cim", "train", "--method", "noise", "--sigma", "0.05", "--model",
        "lenet300100", "--data-dir", str(fashion_dir), "--epochs", "1", "--batch-size", "32",
        "--out", str(noisy), "--no-progress", "--threads", "1",
    )  # fmt: skip
    assert rc == 0 and "nominal chip" in text
    sweep = [
        "cim", "sweep", "--checkpoint", str(std_run), "--checkpoint", str(noisy),
        "--data-dir", str(fashion_dir), "--eps", "0.02", "0.1", "--samples", "3",
        "--steps", "3", "--restarts", "1", "--methods", "pgd", "cw", "--no-progress",
        "--threads", "1", "--out", str(tmp_path / "sw"),
    ]  # fmt: skip
    rc, text, _ = _run(capsys, *sweep)
    assert rc == 0, text
    doc = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert (tmp_path / "sw" / "sweep.png").stat().st_size > 1000
    assert [m["label"] for m in doc["models"]] == ["standard", "noise"]
    for m in doc["models"]:
        assert [p["eps"] for p in m["points"]] == [0.02, 0.1]
        for p in m["points"]:
            assert set(p["worst"]) == {"pgd", "cw"} and len(p["monte_carlo"]["accuracies"]) == 3
            assert p["worst_heldout"] == min(w["heldout_accuracy"] for w in p["worst"].values())
    rc, _, err = _run(capsys, *sweep)
    assert rc == 2 and "--resume" in err
    rc, _, _ = _run(capsys, *sweep, "--resume")
    assert rc == 0 and json.loads((tmp_path / "sw" / "sweep.json").read_text()) == doc


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["mc", "--sigma", "0.1", "--weight-bits", "8", "--device-bits", "3"], "multiple"),
        (["mc", "--sigma", "0"], "every chip would be the same"),
        (["mc", "--sigma", "0.1", "--offset", "1000"], "skips all"),
        (["attack", "--eps", "0.1", "--attack-samples", "64"], "leaves nothing"),
        (["eval", "--perturbation", "/nonexistent.pt"], "no perturbation file"),
        (["mc", "--sigma", "0.1", "--multiplier", "nosuchmul"], "nosuchmul"),
        (["mc", "--sigma", "0.1", "--include", "nothing*"], "select no linear"),
    ],
)
def test_bad_input_is_one_line_error(
    std_run: Path,
    fashion_dir: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    match: str,
) -> None:
    rc, _, err = _run(capsys, "cim", extra[0], *_common(std_run, fashion_dir), *extra[1:])
    assert rc == 2
    assert err.startswith("approxsim: error:") and match in err and "Traceback" not in err


def test_missing_checkpoint_and_foreign_perturbation(
    tmp_path: Path, std_run: Path, fashion_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = _run(capsys, "cim", "mc", "--checkpoint", str(tmp_path), "--sigma", "0.1")
    assert rc == 2 and "no checkpoint" in err
    import torch
    from torch import nn

    from approxsim.cim import DeviceConfig, sample_perturbation
    from approxsim.models import create_model

    torch.manual_seed(123)
    other: nn.Module = create_model("lenet300100")
    sample_perturbation(other, DeviceConfig(sigma=0.1), seed=0).save(tmp_path / "o.pt")
    rc, _, err = _run(
        capsys, "cim", "eval", *_common(std_run, fashion_dir), "--perturbation",
        str(tmp_path / "o.pt"),
    )  # fmt: skip
    assert rc == 2 and "other weights" in err
    rc, _, _ = _run(
        capsys, "cim", "eval", *_common(std_run, fashion_dir), "--perturbation",
        str(tmp_path / "o.pt"), "--no-strict",
    )  # fmt: skip
    assert rc == 0
    with pytest.raises(SystemExit):  # argparse rejects a negative bound itself
        main(["cim", "attack", "--checkpoint", str(std_run), "--eps", "-1"])


def test_ctrl_c_keeps_completed_chips_and_resume_finishes_them(
    tmp_path: Path,
    std_run: Path,
    fashion_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import approxsim.cim.montecarlo as mc_mod

    real = mc_mod.accuracy
    calls = {"n": 0}

    def flaky(*a: object, **k: object) -> float:
        calls["n"] += 1
        if calls["n"] == 4:  # the clean chip, chips 0 and 1, then Ctrl-C in chip 2
            raise KeyboardInterrupt
        return real(*a, **k)  # type: ignore[arg-type]

    out = tmp_path / "mc.json"
    args = ["cim", "mc", *_common(std_run, fashion_dir), "--sigma", "0.2", "--samples", "4"]
    monkeypatch.setattr(mc_mod, "accuracy", flaky)
    rc, _, err = _run(capsys, *args, "--out", str(out))
    assert rc == 130 and "interrupted after 2 chips" in err and "--resume" in err
    partial = json.loads(out.read_text())
    assert len(partial["accuracies"]) == 2 and partial["complete"] is False
    monkeypatch.setattr(mc_mod, "accuracy", real)
    rc, _, _ = _run(capsys, *args, "--out", str(out), "--resume")
    rc2, fresh, _ = _run(capsys, *args, "--json")
    assert rc == rc2 == 0
    assert json.loads(out.read_text())["accuracies"] == json.loads(fresh)["accuracies"]


def test_ctrl_c_during_a_search_keeps_the_worst_so_far(
    trained_mlp: object, blobs: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    import approxsim.cim.search as search_mod
    from approxsim.cim import DeviceConfig, SearchConfig, worst_case_search

    real = search_mod.run_component
    calls = {"n": 0}

    def flaky(*a: object, **k: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(search_mod, "run_component", flaky)
    res = worst_case_search(
        trained_mlp,  # type: ignore[arg-type]
        blobs[0],
        DeviceConfig(),
        SearchConfig(eps=0.2, method="pgd", steps=5, restarts=3),
    )
    assert res.interrupted and len(res.restart_accuracies) == 1
    calls["n"] = 1  # the next call raises: before any restart finished
    with pytest.raises(KeyboardInterrupt):
        worst_case_search(
            trained_mlp,  # type: ignore[arg-type]
            blobs[0],
            DeviceConfig(),
            SearchConfig(eps=0.2, steps=5, restarts=3),
        )


@pytest.mark.parametrize("action", ["mc", "eval", "train", "attack", "sweep"])
def test_clip_flag_reaches_the_device_config(action: str) -> None:
    from approxsim.cli import build_parser
    from approxsim.cli.cim_commands import device_config_from_args as _device_config

    where = ["--out", "x"] if action == "train" else ["--checkpoint", "x"]
    if action in ("attack", "sweep"):  # the searching commands have no --sigma
        argv = ["cim", action, *where, "--eps", "0.1", "--out", "o"]
    else:
        argv = ["cim", action, *where, "--sigma", "0.1"]
    if action == "train":
        argv += ["--method", "noise"]
    parser = build_parser()
    assert _device_config(parser.parse_args([*argv, "--clip"])).clip is True
    assert _device_config(parser.parse_args(argv)).clip is False


def test_clipped_mc_and_eval_agree_and_misuse_is_refused(
    tmp_path: Path, std_run: Path, fashion_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = _common(std_run, fashion_dir)
    rc, text, _ = _run(capsys, "cim", "mc", *common, "--sigma", "0.5", "--clip", "--samples", "2")
    assert rc == 0 and "clipped to [0, 1]" in text
    rc, text, _ = _run(
        capsys, "cim", "mc", *common, "--sigma", "0.5", "--clip", "--samples", "2", "--seed", "4",
        "--json", "--save-worst", str(tmp_path / "w.pt"),
    )  # fmt: skip
    mc = json.loads(text)
    assert rc == 0 and mc["device"]["clip"] is True
    # cim eval --seed K draws chip 0 of cim mc --seed K: the same clipped chip.
    rc, text, _ = _run(
        capsys, "cim", "eval", *common, "--sigma", "0.5", "--clip", "--seed", "4", "--json"
    )
    ev = json.loads(text)
    assert rc == 0 and ev["device"]["clip"] is True and ev["accuracy"] == mc["accuracies"][0]
    # The saved clipped chip replays (its file records the clipping).
    rc, text, _ = _run(
        capsys, "cim", "eval", *common, "--perturbation", str(tmp_path / "w.pt"), "--json"
    )
    assert rc == 0 and json.loads(text)["accuracy"] == min(mc["accuracies"])
    # An unclipped perturbation is replayed as saved, not clipped behind the user's back.
    rc, text, _ = _run(
        capsys, "cim", "mc", *common, "--sigma", "0.5", "--samples", "1", "--json",
        "--save-worst", str(tmp_path / "u.pt"),
    )  # fmt: skip
    assert rc == 0 and "clip" not in json.loads(text)["device"]
    rc, _, err = _run(
        capsys, "cim", "eval", *common, "--perturbation", str(tmp_path / "u.pt"), "--clip"
    )
    assert rc == 2 and "--clip" in err and "Traceback" not in err
    rc, _, err = _run(
        capsys, "cim", "train", "--method", "adversarial", "--clip", "--out", str(tmp_path / "t"),
        "--data-dir", str(fashion_dir), "--no-progress",
    )  # fmt: skip
    assert rc == 2 and "clip" in err


def _help_options(capsys: pytest.CaptureFixture[str], *argv: str) -> set[str]:
    """The option strings ``--help`` of a command lists (``-h, --help  show ...`` lines)."""
    import re

    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    found = set()
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  -"):
            head = re.split(r"\s{2,}", line.strip())[0]
            found.update(part.split()[0] for part in head.split(", "))
    return found


def test_cim_train_offers_every_option_of_train(capsys: pytest.CaptureFixture[str]) -> None:
    train = _help_options(capsys, "train")
    cim_train = _help_options(capsys, "cim", "train")
    assert {"--grad-input", "--grad-weight", "--include", "--seed", "--schedule"} <= train
    assert train - cim_train == set()
    assert {"--method", "--sigma", "--eps", "--adv-steps", "--clip"} <= cim_train


def test_cim_train_takes_the_training_options(tmp_path: Path) -> None:
    from approxsim.cim import CIMTrainConfig, DeviceConfig
    from approxsim.cli import build_parser
    from approxsim.cli.cim_commands import device_config_from_args
    from approxsim.cli.train import training_config_from_args

    args = build_parser().parse_args(
        ["cim", "train", "--method", "noise", "--sigma", "0.1", "--out", str(tmp_path / "r"),
         "--grad-input", "mitchell7", "--grad-weight", "fp32", "--optimizer", "adam",
         "--schedule", "none", "--include", "fc*", "--seed", "7"]
    )  # fmt: skip
    base = training_config_from_args(args, multiplier="fp32")
    assert base.grad_input is not None and base.grad_input.name == "mitchell7"
    assert (base.optimizer, base.schedule, base.seed) == ("adam", "none", 7)
    assert tuple(base.include or ()) == ("fc*",)  # --include converts these layers ...
    cfg = CIMTrainConfig(
        train=base, method="noise", device_model=device_config_from_args(args),
        include=tuple(args.include),
    )  # fmt: skip
    assert cfg.include == ("fc*",) and cfg.device_model == DeviceConfig(sigma=0.1)  # ... maps them


def test_clipped_attack_and_sweep_print_and_record_origin_and_cost(
    tmp_path: Path, std_run: Path, fashion_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default search (auto) with --clip and --budget: which run found the chip and what
    it cost, printed and in the files; the clipped chip replays."""
    p, res = tmp_path / "p.pt", tmp_path / "attack.json"
    rc, text, _ = _run(
        capsys, "cim", "attack", *_common(std_run, fashion_dir), "--eps", "0.1", "--clip",
        "--budget", "4", "--save", str(p), "--out", str(res),
    )  # fmt: skip
    assert rc == 0 and "found by" in text and "4 of 4 gradient steps" in text
    assert "device space" in text
    r = json.loads(res.read_text())
    assert r["search"]["method"] == "auto" and r["device"]["clip"] is True
    assert r["cost"]["gradient_steps"] == 4 and r["found_by"] in {x["run"] for x in r["runs"]}
    rc, text, _ = _run(
        capsys, "cim", "eval", *_common(std_run, fashion_dir), "--perturbation", str(p),
        "--max-samples", str(N_TEST // 2), "--json",
    )  # fmt: skip
    assert rc == 0 and json.loads(text)["accuracy"] == r["attack_accuracy"]
    rc, _, err = _run(
        capsys, "cim", "attack", *_common(std_run, fashion_dir), "--eps", "0.1", "--budget", "1"
    )
    assert rc == 2 and "budget 1" in err
    rc, text, _ = _run(
        capsys, "cim", "sweep", *_common(std_run, fashion_dir), "--eps", "0.05", "0.1",
        "--clip", "--samples", "2", "--budget", "2", "--out", str(tmp_path / "sw"),
    )  # fmt: skip
    assert rc == 0, text
    doc = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert doc["device"]["clip"] is True and doc["methods"] == ["auto"]
    pts = doc["models"][0]["points"]
    assert all(pt["worst"]["auto"]["space"] == "device" for pt in pts)
    assert "monotonicity" in pts[1]
