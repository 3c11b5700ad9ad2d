"""``approxsim cim``: Monte Carlo, worst-case search, replay, robustness training, sweeps.

Subcommands (registered in :mod:`approxsim.cli` through :func:`add_cim_parser` and
:func:`run_cim_cli`)::

    approxsim cim mc      --checkpoint RUN --sigma 0.02 [--samples 100] [--out mc.json]
    approxsim cim attack  --checkpoint RUN --eps 0.03 [--method pgd|cw] [--save p.pt]
    approxsim cim eval    --checkpoint RUN [--perturbation p.pt | --sigma S --seed K]
    approxsim cim train   --method noise|adversarial|standard --out DIR [train options]
    approxsim cim sweep   --checkpoint RUN... --eps 0.01 0.02 ... --out DIR

Checkpoints are those of ``approxsim train`` (or ``approxsim cim train``). User errors print
one line and exit with status 2; Ctrl-C exits with 130 after saving what is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from approxsim.cim.chip import Perturbation, chip, sample_perturbation
from approxsim.cim.device import MAPPINGS, CIMError, DeviceConfig
from approxsim.cim.evaluation import DataLike, accuracy, num_samples, split_data
from approxsim.cim.montecarlo import chip_seed, monte_carlo
from approxsim.cim.search import BOUND_UNITS, SEARCH_METHODS, SearchConfig, worst_case_search
from approxsim.cim.sweep import plot_sweep, run_sweep, sweep_table
from approxsim.cim.training import TRAIN_METHODS, CIMTrainConfig, checkpoint_method, train_cim
from approxsim.cli.common import finite_float, int_at_least

__all__ = ["add_cim_parser", "run_cim_cli", "CIM_ACTIONS"]

CIM_ACTIONS = ("mc", "attack", "eval", "train", "sweep")
MC_SCHEMA = "approxsim.cim.mc/1"
ATTACK_SCHEMA = "approxsim.cim.attack/1"
EVAL_SCHEMA = "approxsim.cim.eval/1"


# ---------------------------------------------------------------------------- argument types
_pos_int = int_at_least(1)
_nonneg_int = int_at_least(0)
_nonneg_float = finite_float(positive=False)
_pos_float = finite_float(positive=True)


# ---------------------------------------------------------------------------- option groups
def _add_device_options(p: argparse.ArgumentParser, *, sigma: bool) -> None:
    g = p.add_argument_group("device model")
    g.add_argument("--weight-bits", type=_pos_int, default=8, help="weight bits N (8)")
    g.add_argument("--device-bits", type=_pos_int, default=2, help="bits per device m (2)")
    g.add_argument("--mapping", choices=MAPPINGS, default="sign-magnitude", help="signed weights")
    if sigma:
        g.add_argument(
            "--sigma",
            type=_nonneg_float,
            default=0.0,
            help="device-to-device std, fraction of a device's range (0)",
        )
        g.add_argument(
            "--write-verify",
            type=_pos_float,
            metavar="TOL",
            help="write-verify the devices to |dg| <= TOL",
        )
        g.add_argument(
            "--verify-slices",
            type=_pos_int,
            metavar="K",
            help="write-verify only the K most significant slices (default: all)",
        )
        g.add_argument(
            "--read-noise", type=_nonneg_float, default=0.0, help="per-read noise std (0)"
        )
        g.add_argument(
            "--clip",
            action="store_true",
            help="clip every device's conductance g + dg to its range [0, 1] (default: "
            "additive deviations, unclipped)",
        )
    g.add_argument("--include", action="append", metavar="PAT", help="map only these layers")
    g.add_argument("--exclude", action="append", metavar="PAT", help="keep these layers digital")


def _add_model_options(p: argparse.ArgumentParser, *, many: bool = False) -> None:
    from approxsim.cli.common import add_multiplier_arguments

    if many:
        p.add_argument(
            "--checkpoint",
            action="append",
            required=True,
            metavar="RUN",
            help="checkpoint.pt or run folder (repeat for several models)",
        )
    else:
        p.add_argument("--checkpoint", required=True, metavar="RUN", help="checkpoint or run dir")
    add_multiplier_arguments(p)
    p.set_defaults(multiplier=None)
    r = p.add_argument_group("data and run")
    r.add_argument("--dataset", help="dataset (default: the checkpoint's)")
    r.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's files")
    r.add_argument("--batch-size", type=_pos_int, default=1000, help="scoring batch size (1000)")
    r.add_argument("--threads", type=_pos_int, metavar="N", help="CPU threads")
    r.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    r.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def _add_split_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data to score")
    g.add_argument("--split", choices=["test", "train"], default="test", help="split (test)")
    g.add_argument("--offset", type=_nonneg_int, default=0, help="skip the first K samples")
    g.add_argument("--max-samples", type=_pos_int, metavar="N", help="score N samples only")


def _add_attack_split_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("attack and held-out splits")
    g.add_argument(
        "--attack-split",
        choices=["test", "train"],
        default="test",
        help="test: attack the first --attack-samples test images, hold out the rest; "
        "train: attack training images, hold out the whole test set (test)",
    )
    g.add_argument(
        "--attack-samples",
        type=_pos_int,
        metavar="N",
        help="attack-split size (default: half the test set, or 5000 training images)",
    )
    g.add_argument(
        "--heldout-samples", type=_pos_int, metavar="N", help="score N held-out samples only"
    )


def _add_search_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search")
    g.add_argument(
        "--unit",
        choices=BOUND_UNITS,
        default="weight",
        help="weight: eps is |dw|/max|w| per weight (the paper's); device: |dg| per device",
    )
    g.add_argument("--steps", type=_pos_int, default=100, help="steps per restart (100)")
    g.add_argument("--restarts", type=_pos_int, default=2, help="random restarts (2)")
    g.add_argument("--step-size", type=_pos_float, help="PGD first step, in units of eps (0.25)")
    g.add_argument("--lr", type=_pos_float, default=0.1, help="CW Adam learning rate (0.1)")
    g.add_argument("--kappa", type=_nonneg_float, default=0.0, help="margin clip (0)")
    g.add_argument("--search-batch-size", type=_pos_int, default=256, help="samples per step (256)")
    g.add_argument("--seed", type=_nonneg_int, default=0, help="seed (0)")


def add_cim_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``approxsim cim`` and its subcommands (``dest="action"``).

    Args:
        subparsers: What ``ArgumentParser.add_subparsers(dest="command")`` returned.

    Returns:
        The ``cim`` parser.
    """
    cim = subparsers.add_parser(
        "cim",
        help="analog compute-in-memory: device variation, Monte Carlo, worst case",
        description=(
            "Map a trained model's linear and convolution layers to non-volatile devices "
            "(weights scaled to the layer's max |w|, quantized to N bits, bit-sliced over "
            "devices of m bits) and measure accuracy under device variation: Monte Carlo over "
            "chips, worst-case search within a bound, robustness training and sweeps. See "
            "docs/cim.md."
        ),
    )
    sub = cim.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    mc = sub.add_parser(
        "mc",
        help="Monte Carlo accuracy over sampled chips",
        description="Score S chips with device variation sigma; print mean, std, low "
        "percentiles and their confidence intervals.",
    )
    _add_model_options(mc)
    _add_device_options(mc, sigma=True)
    _add_split_options(mc)
    mc.add_argument("--samples", type=_pos_int, default=100, help="chips S (100)")
    mc.add_argument("--seed", type=_nonneg_int, default=0, help="seed (0)")
    mc.add_argument("--confidence", type=float, default=0.95, help="interval coverage (0.95)")
    mc.add_argument("--out", metavar="FILE.json", help="write the result (kept up to date)")
    mc.add_argument("--resume", action="store_true", help="continue the run in --out")
    mc.add_argument("--save-worst", metavar="FILE.pt", help="save the worst chip for replay")
    mc.add_argument("--json", action="store_true", help="print JSON")

    at = sub.add_parser(
        "attack",
        help="worst-case search of the device deviations within a bound",
        description="Search |dg| <= eps (or the equivalent per-weight bound) for the "
        "deviations that minimize accuracy on the attack split (PGD on the classification "
        "margin with restarts, or the CW-style weight-space search); score on the attack "
        "and the held-out split; save the perturbation for replay.",
    )
    _add_model_options(at)
    _add_device_options(at, sigma=False)
    _add_attack_split_options(at)
    at.add_argument("--eps", type=_pos_float, required=True, help="the bound (see --unit)")
    at.add_argument("--method", choices=SEARCH_METHODS, default="pgd", help="pgd (default) or cw")
    _add_search_options(at)
    at.add_argument("--save", metavar="FILE.pt", help="save the perturbation (replay: cim eval)")
    at.add_argument("--out", metavar="FILE.json", help="write the result")
    at.add_argument("--json", action="store_true", help="print JSON")

    ev = sub.add_parser(
        "eval",
        help="score one chip: nominal, sampled, or a saved perturbation",
        description="Accuracy of the chip without variation, of chip --seed drawn with "
        "--sigma, or of a saved perturbation (--perturbation FILE.pt, e.g. from cim attack "
        "--save or cim mc --save-worst).",
    )
    _add_model_options(ev)
    _add_device_options(ev, sigma=True)
    _add_split_options(ev)
    ev.add_argument("--perturbation", metavar="FILE.pt", help="a saved perturbation")
    ev.add_argument(
        "--no-strict", action="store_true", help="apply a perturbation made for other weights"
    )
    ev.add_argument("--seed", type=_nonneg_int, default=0, help="chip seed with --sigma (0)")
    ev.add_argument("--json", action="store_true", help="print JSON")

    tr = sub.add_parser(
        "train",
        help="noise-injection or adversarial weight-perturbation training",
        description="approxsim train with a CIM training step: noise injection (a fresh chip "
        "drawn with --sigma per minibatch) or adversarial weight perturbation (the worst "
        "chip within --eps per minibatch). Writes the same run folder as approxsim train.",
    )
    _add_train_options(tr)

    sw = sub.add_parser(
        "sweep",
        help="Monte Carlo and worst case over several bounds and models, with a plot",
        description="For each checkpoint and each eps: Monte Carlo with sigma = eps (per "
        "device) on the held-out split, and the worst case within eps searched on the attack "
        "split. Writes OUT/sweep.json (after every piece; --resume continues) and "
        "OUT/sweep.png.",
    )
    _add_model_options(sw, many=True)
    _add_device_options(sw, sigma=False)
    _add_attack_split_options(sw)
    sw.add_argument("--eps", type=_pos_float, nargs="+", required=True, help="bounds (see --unit)")
    sw.add_argument("--label", action="append", help="label per checkpoint (default: method)")
    sw.add_argument("--samples", type=_pos_int, default=50, help="Monte Carlo chips (50)")
    sw.add_argument(
        "--mc-bounded",
        action="store_true",
        help="write-verify the Monte Carlo chips to |dg| <= eps (inside the search box)",
    )
    sw.add_argument(
        "--methods", nargs="+", choices=SEARCH_METHODS, default=["pgd"], help="search methods"
    )
    _add_search_options(sw)
    sw.add_argument("--out", required=True, metavar="DIR", help="folder for sweep.json/.png")
    sw.add_argument("--resume", action="store_true", help="continue the sweep in --out")
    return cim


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from approxsim.cli.common import add_multiplier_arguments
    from approxsim.data import list_datasets
    from approxsim.models import list_models

    p.add_argument("--method", choices=TRAIN_METHODS, required=True, help="training method")
    p.add_argument("--model", default="lenet5", help=f"one of {', '.join(list_models())}")
    p.add_argument(
        "--dataset", default="fashion-mnist", help=f"one of {', '.join(list_datasets())}"
    )
    p.add_argument("--epochs", type=_pos_int, default=5, help="epochs (5)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (empty or new)")
    add_multiplier_arguments(p)
    p.set_defaults(multiplier=None)
    _add_device_options(p, sigma=True)
    g = p.add_argument_group("adversarial weight perturbation")
    g.add_argument("--eps", type=_pos_float, default=0.02, help="per-weight bound (0.02)")
    g.add_argument("--adv-steps", type=_pos_int, default=1, help="ascent steps per batch (1)")
    g.add_argument("--adv-step-size", type=_pos_float, help="step in units of eps (2.5/steps)")
    h = p.add_argument_group("optimization (defaults: the model's)")
    h.add_argument("--seed", type=_nonneg_int, default=0, help="seed (0)")
    h.add_argument("--batch-size", type=_pos_int, help="samples per step (LeNets: 128)")
    h.add_argument("--lr", type=float, help="learning rate")
    h.add_argument("--momentum", type=float, help="SGD momentum")
    h.add_argument("--weight-decay", type=float, help="L2 penalty")
    h.add_argument("--optimizer", choices=("sgd", "adam"), help="optimizer")
    h.add_argument("--schedule", choices=("none", "cosine"), help="lr schedule")
    r = p.add_argument_group("data and run")
    r.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's files")
    r.add_argument("--max-train-samples", type=_pos_int, metavar="N", help="first N only")
    r.add_argument("--max-test-samples", type=_pos_int, metavar="N", help="first N only")
    r.add_argument("--threads", type=_pos_int, metavar="N", help="CPU threads")
    r.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    r.add_argument("--resume", action="store_true", help="continue the run in --out")
    r.add_argument("--overwrite", action="store_true", help="start the run in --out over")
    r.add_argument("--no-progress", action="store_true", help="no progress output")


# ---------------------------------------------------------------------------- helpers
def _device_config(args: argparse.Namespace, **over: Any) -> DeviceConfig:
    kw: dict[str, Any] = {
        "weight_bits": args.weight_bits,
        "device_bits": args.device_bits,
        "mapping": args.mapping,
    }
    if hasattr(args, "sigma"):
        kw.update(
            sigma=args.sigma,
            write_verify_tolerance=args.write_verify,
            write_verify_slices=args.verify_slices,
            read_noise=args.read_noise,
            clip=args.clip,
        )
    kw.update(over)
    return DeviceConfig(**kw)


def _multiplier(args: argparse.Namespace) -> Any:
    from approxsim.cli.common import multiplier_from_args

    if not any(getattr(args, k, None) for k in ("multiplier", "c", "approxtrain_lut", "lut")):
        return "fp32"
    return multiplier_from_args(args)


class _Loaded:
    """A checkpoint's model (with the chosen multiplier) and its test/train data."""

    def __init__(self, path: str, args: argparse.Namespace) -> None:
        from approxsim.experiments.train import (
            CheckpointError,
            build_model,
            load_checkpoint,
            load_data,
            resolve_device,
        )
        from approxsim.ops import PassMultipliers

        self.path = path
        self.state = load_checkpoint(path)
        saved = self.state["config"]
        self.dataset = args.dataset or saved["dataset"]
        same = args.dataset in (None, saved["dataset"])
        self.data_dir = args.data_dir if args.data_dir or not same else saved.get("data_dir")
        self._load = load_data
        self.test = load_data(self.dataset, self.data_dir, "test", None)
        mult = _multiplier(args)
        passes = PassMultipliers(mult)
        self.multiplier = passes.forward.name
        model, _ = build_model(
            saved["model"],
            self.test.num_classes,
            self.test.sample_shape,
            passes,
            saved.get("include"),
            saved.get("exclude"),
        )
        try:
            model.load_state_dict(self.state["model"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: its weights do not fit model {saved['model']!r}: {exc}"
            ) from None
        self.model: nn.Module = model.to(resolve_device(args.device)).eval()
        self.model_name = saved["model"]
        self.method = checkpoint_method(self.state)

    def split(self, name: str) -> Any:
        return (
            self.test if name == "test" else self._load(self.dataset, self.data_dir, "train", None)
        )

    def describe(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.path),
            "model": self.model_name,
            "epoch": int(self.state["epoch"]),
            "method": self.method,
            "dataset": self.dataset,
            "multiplier": self.multiplier,
        }


def _scored_data(loaded: _Loaded, args: argparse.Namespace) -> tuple[DataLike, dict[str, Any]]:
    data = loaded.split(args.split)
    n = num_samples(data)
    lo = args.offset
    hi = n if args.max_samples is None else min(n, lo + args.max_samples)
    if lo >= n:
        raise CIMError(f"--offset {lo} skips all {n} samples of the {args.split} split")
    x, y = data.batch(torch.arange(lo, hi))
    return (x, y), {"split": args.split, "offset": lo, "samples": hi - lo}


def _attack_splits(
    loaded: _Loaded, args: argparse.Namespace
) -> tuple[DataLike, DataLike, dict[str, Any]]:
    test = loaded.test
    n_test = num_samples(test)
    if args.attack_split == "test":
        k = args.attack_samples or n_test // 2
        if k >= n_test:
            raise CIMError(
                f"--attack-samples {k} leaves nothing of the {n_test} test samples held out"
            )
        attack, held = split_data(test, k)
        info: dict[str, Any] = {"attack": f"test[0:{k}]", "heldout": f"test[{k}:{n_test}]"}
    else:
        train = loaded.split("train")
        k = min(args.attack_samples or 5000, num_samples(train))
        attack = train.batch(torch.arange(k))
        held = test.batch(torch.arange(n_test))
        info = {"attack": f"train[0:{k}]", "heldout": f"test[0:{n_test}]"}
    if args.heldout_samples is not None and args.heldout_samples < num_samples(held):
        held = (held[0][: args.heldout_samples], held[1][: args.heldout_samples])
        start = int(info["heldout"].split("[")[1].split(":")[0])
        info["heldout"] = f"{info['heldout'].split('[')[0]}[{start}:{start + args.heldout_samples}]"
    info["attack_samples"] = num_samples(attack)
    info["heldout_samples"] = num_samples(held)
    return attack, held, info


def _bar(args: argparse.Namespace, desc: str, total: int) -> Any:
    from approxsim.experiments.train import Progress

    return Progress(total, desc, not args.no_progress)


def _write_json(path: str | Path, obj: Any) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=1) + "\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: str | Path) -> dict[str, Any]:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CIMError(f"cannot read {path} to resume it: {exc}") from None
    if not isinstance(obj, dict):
        raise CIMError(f"{path} is not a result file")
    return obj


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


# ---------------------------------------------------------------------------- commands
def _cmd_mc(args: argparse.Namespace) -> int:
    loaded = _Loaded(args.checkpoint, args)
    cfg = _device_config(args)
    if cfg.sigma == 0 and cfg.read_noise == 0:
        raise CIMError("--sigma (or --read-noise) is 0: every chip would be the same")
    if not 0 < args.confidence < 1:
        raise CIMError(f"--confidence must lie in (0, 1), got {args.confidence}")
    data, data_info = _scored_data(loaded, args)
    base = {
        "schema": MC_SCHEMA,
        **loaded.describe(),
        "data": data_info,
        "device": cfg.to_dict(),
        "seed": args.seed,
        "include": args.include,
        "exclude": args.exclude,
    }
    previous: list[float] = []
    if args.resume:
        if not args.out:
            raise CIMError("--resume needs --out (the result file to continue)")
        if Path(args.out).exists():
            old = _read_json(args.out)
            diffs = [k for k in base if k != "epoch" and old.get(k) != base[k]]
            if diffs:
                raise CIMError(f"cannot resume {args.out}: settings differ in {diffs}")
            previous = list(old.get("accuracies", []))[: args.samples]
    partial = dict(base, accuracies=list(previous), complete=False)

    def saved(i: int, acc: float) -> None:
        partial["accuracies"].append(acc)
        if args.out:
            _write_json(args.out, partial)

    bar = _bar(args, "monte carlo", (args.samples - len(previous)) * data_info["samples"])
    try:
        res = monte_carlo(
            loaded.model,
            data,
            cfg,
            samples=args.samples,
            seed=args.seed,
            include=args.include,
            exclude=args.exclude,
            batch_size=args.batch_size,
            confidence=args.confidence,
            previous=previous,
            on_chip=saved,
            progress=bar,
        )
    except KeyboardInterrupt:
        bar.close()
        done = len(partial["accuracies"])
        where = f"{done} chips are saved in {args.out}; continue with --resume" if args.out else ""
        print(f"approxsim: interrupted after {done} chips. {where}".rstrip(), file=sys.stderr)
        return 130
    bar.close()
    out = {**base, **res.to_dict(), "complete": True}
    if args.save_worst:
        worst = sample_perturbation(
            loaded.model,
            cfg,
            seed=chip_seed(args.seed, res.worst_index),
            include=args.include,
            exclude=args.exclude,
        )
        worst.meta.update(chip=res.worst_index, accuracy=res.accuracies[res.worst_index])
        out["worst_chip_file"] = str(worst.save(args.save_worst))
    if args.out:
        _write_json(args.out, out)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    s = res.summary
    print(f"checkpoint   {loaded.path} ({loaded.method}, {loaded.model_name})")
    print(
        f"data         {data_info['split']}[{data_info['offset']}:"
        f"{data_info['offset'] + data_info['samples']}]"
    )
    print(f"device       {_describe_device(cfg)}")
    print(f"clean chip   {_pct(res.clean_accuracy)}")
    print(f"chips        {s['samples']} (seed {args.seed})")
    print(
        f"mean         {_pct(s['mean'])}  95% CI [{_pct(s['mean_ci'][0])}, "
        f"{_pct(s['mean_ci'][1])}] (bootstrap)"
    )
    print(f"std          {_pct(s['std'])}")
    for k in ("p1", "p5"):
        lo, hi = s[f"{k}_ci"]
        print(
            f"{k:<12} {_pct(s[k])}  CI [{_pct(lo)}, {_pct(hi)}] (order statistics, "
            f"coverage {100 * s[f'{k}_ci_coverage']:.1f}%)"
        )
    print(f"min / max    {_pct(s['min'])} / {_pct(s['max'])} (worst chip {res.worst_index})")
    if args.save_worst:
        print(f"worst chip   {out['worst_chip_file']}")
    if args.out:
        print(f"result       {args.out}")
    return 0


def _describe_device(cfg: DeviceConfig) -> str:
    text = (
        f"{cfg.weight_bits}-bit weights on {cfg.slices}x{cfg.device_bits}-bit devices "
        f"({cfg.mapping}), sigma {cfg.sigma:g}"
    )
    if cfg.write_verify_tolerance is not None:
        text += (
            f", write-verify |dg| <= {cfg.write_verify_tolerance:g} on {cfg.verified_slices} slices"
        )
    if cfg.clip:
        text += ", conductances clipped to [0, 1]"
    if cfg.read_noise:
        text += f", read noise {cfg.read_noise:g}"
    return text


def _cmd_attack(args: argparse.Namespace) -> int:
    loaded = _Loaded(args.checkpoint, args)
    cfg = _device_config(args)
    search = SearchConfig(
        eps=args.eps,
        unit=args.unit,
        method=args.method,
        steps=args.steps,
        restarts=args.restarts,
        step_size=args.step_size,
        lr=args.lr,
        kappa=args.kappa,
        batch_size=args.search_batch_size,
        seed=args.seed,
    )
    attack, held, info = _attack_splits(loaded, args)
    bar = _bar(args, f"{args.method} search", search.restarts * search.steps * search.batch_size)
    try:
        res = worst_case_search(
            loaded.model,
            attack,
            cfg,
            search,
            heldout_data=held,
            include=args.include,
            exclude=args.exclude,
            eval_batch_size=args.batch_size,
            progress=bar,
        )
    except KeyboardInterrupt:
        bar.close()
        print("approxsim: interrupted before the first restart finished", file=sys.stderr)
        return 130
    bar.close()
    res.perturbation.meta.update(checkpoint=str(loaded.path), data=info)
    out = {"schema": ATTACK_SCHEMA, **loaded.describe(), "data": info, **res.to_dict()}
    if args.save:
        out["perturbation_file"] = str(res.perturbation.save(args.save))
    if args.out:
        _write_json(args.out, out)
    if args.json:
        print(json.dumps(out, indent=1))
        return 130 if res.interrupted else 0
    st = res.stats
    print(f"checkpoint   {loaded.path} ({loaded.method}, {loaded.model_name})")
    print(
        f"bound        |dw| <= {res.eps_weight:g} * max|w| per weight "
        f"(= |dg| <= {res.eps_device:g} per device)"
    )
    print(
        f"search       {args.method}, {search.restarts} restarts x {search.steps} steps"
        + (" (INTERRUPTED: best so far)" if res.interrupted else "")
    )
    print(
        f"attack split {info['attack']}: clean {_pct(res.attack_clean_accuracy)} -> "
        f"worst {_pct(res.attack_accuracy)}  (optimized on this split)"
    )
    print(
        f"held-out     {info['heldout']}: clean {_pct(res.heldout_clean_accuracy)} -> "
        f"{_pct(res.heldout_accuracy)}"
    )
    print(
        f"perturbation mean |dw|/s {st['mean_abs_weight_delta']:.4g}, "
        f"{100 * st['fraction_at_max']:.1f}% of weights at the bound, "
        f"max |dg| {st['max_abs_device_deviation']:.4g}"
    )
    if args.save:
        print(
            f"saved        {out['perturbation_file']} (replay: approxsim cim eval "
            f"--checkpoint {loaded.path} --perturbation {args.save})"
        )
    return 130 if res.interrupted else 0


def _cmd_eval(args: argparse.Namespace) -> int:
    loaded = _Loaded(args.checkpoint, args)
    data, info = _scored_data(loaded, args)
    cfg = _device_config(args)
    pert: Perturbation | None = None
    if args.perturbation:
        pert = Perturbation.load(args.perturbation)
        if cfg.sigma:
            raise CIMError("--perturbation and --sigma exclude each other: replay or sample")
        if cfg.clip and not pert.config.clip:
            raise CIMError(
                "--clip does not apply to --perturbation: the perturbation was made without "
                "clipping and is replayed as saved; drop --clip"
            )
        cfg = pert.config.replace(read_noise=cfg.read_noise)
        kind = f"perturbation {args.perturbation}"
    elif cfg.sigma:
        pert = sample_perturbation(
            loaded.model,
            cfg,
            seed=chip_seed(args.seed, 0),
            include=args.include,
            exclude=args.exclude,
        )
        kind = f"chip seed {args.seed} (sigma {cfg.sigma:g})"
    else:
        kind = "nominal chip (quantized, no variation)"
    float_acc = accuracy(loaded.model, data, batch_size=args.batch_size)
    with chip(
        loaded.model,
        pert,
        config=cfg,
        include=args.include,
        exclude=args.exclude,
        read_seed=chip_seed(args.seed, 0, "reads"),
        strict=not args.no_strict,
    ) as h:
        acc = accuracy(loaded.model, data, batch_size=args.batch_size)
        h.check_called()
    layers = h.layers
    out = {
        "schema": EVAL_SCHEMA,
        **loaded.describe(),
        "data": info,
        "chip": kind,
        "device": cfg.to_dict(),
        "float_accuracy": float_acc,
        "accuracy": acc,
        "perturbation_stats": pert.stats(layers) if pert is not None else None,
        "perturbation_meta": pert.meta if pert is not None else None,
    }
    if args.json:
        print(json.dumps(out, indent=1, default=str))
        return 0
    print(f"checkpoint   {loaded.path} ({loaded.method}, {loaded.model_name})")
    print(f"data         {info['split']}[{info['offset']}:{info['offset'] + info['samples']}]")
    print(f"chip         {kind}")
    print(f"float        {_pct(float_acc)}")
    print(f"accuracy     {_pct(acc)}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from approxsim.experiments.train import TrainConfig

    base = TrainConfig(
        out_dir=args.out,
        model=args.model,
        dataset=args.dataset,
        multiplier=_multiplier(args),
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        seed=args.seed,
        data_dir=args.data_dir,
        max_train_samples=args.max_train_samples,
        max_test_samples=args.max_test_samples,
        threads=args.threads,
        device=args.device,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    cfg = CIMTrainConfig(
        train=base,
        method=args.method,
        device_model=_device_config(args),
        eps=args.eps,
        adv_steps=args.adv_steps,
        adv_step_size=args.adv_step_size,
        include=tuple(args.include) if args.include else None,
        exclude=tuple(args.exclude) if args.exclude else None,
    )
    try:
        res = train_cim(cfg)
    except KeyboardInterrupt:
        return 130
    final = res["final"]
    print(f"run          {res['out_dir']}")
    print(f"model        {res['model']} on {res['dataset']}, method {res['method']}")
    if final is not None:
        print(
            f"final        test acc {100 * final['test_acc']:.2f}% (float), "
            f"{100 * final['test_acc_chip']:.2f}% (nominal chip), epoch {final['epoch']}"
        )
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    if args.label and len(args.label) != len(args.checkpoint):
        raise CIMError(
            f"{len(args.label)} --label for {len(args.checkpoint)} --checkpoint: give one "
            "label per checkpoint, or none"
        )
    out_dir = Path(args.out)
    json_path, png_path = out_dir / "sweep.json", out_dir / "sweep.png"
    if json_path.exists() and not args.resume:
        raise CIMError(f"{json_path} exists; pass --resume to continue it or choose another --out")
    previous = _read_json(json_path) if args.resume and json_path.exists() else None
    cfg = _device_config(args)
    loaded = [_Loaded(c, args) for c in args.checkpoint]
    labels = args.label or [ld.method for ld in loaded]
    if len(set(labels)) != len(labels):
        labels = [
            f"{lab} ({Path(ld.path).name or ld.path})"
            for lab, ld in zip(labels, loaded, strict=True)
        ]
    first = loaded[0]
    attack, held, info = _attack_splits(first, args)
    for ld in loaded[1:]:
        if (ld.dataset, ld.test.num_classes) != (first.dataset, first.test.num_classes):
            raise CIMError("all checkpoints of a sweep must use the same dataset")
    search = SearchConfig(
        eps=1.0,
        unit=args.unit,
        steps=args.steps,
        restarts=args.restarts,
        step_size=args.step_size,
        lr=args.lr,
        kappa=args.kappa,
        batch_size=args.search_batch_size,
        seed=args.seed,
    )
    latest: dict[str, Any] = {}

    def save(doc: dict[str, Any]) -> None:
        latest["doc"] = doc
        _write_json(json_path, doc)

    try:
        doc = run_sweep(
            [(lab, ld.model) for lab, ld in zip(labels, loaded, strict=True)],
            attack,
            held,
            args.eps,
            config=cfg,
            unit=args.unit,
            mc_samples=args.samples,
            mc_bounded=args.mc_bounded,
            seed=args.seed,
            search=search,
            methods=args.methods,
            include=args.include,
            exclude=args.exclude,
            batch_size=args.batch_size,
            data_info=info,
            model_info={lab: ld.describe() for lab, ld in zip(labels, loaded, strict=True)},
            previous=previous,
            on_update=save,
            progress=lambda desc, total: _bar(args, desc, total),
        )
    except KeyboardInterrupt:
        if "doc" in latest:
            plot_sweep(latest["doc"], png_path)
        print(
            f"approxsim: interrupted; finished pieces are in {json_path} (continue with --resume)",
            file=sys.stderr,
        )
        return 130
    save(doc)
    plot_sweep(doc, png_path)
    print(sweep_table(doc, markdown=False))
    print(f"attack split {info['attack']}, held-out {info['heldout']}; MC sigma = eps per device")
    print(f"result       {json_path}")
    print(f"plot         {png_path}")
    return 0


_COMMANDS = {
    "mc": _cmd_mc,
    "attack": _cmd_attack,
    "eval": _cmd_eval,
    "train": _cmd_train,
    "sweep": _cmd_sweep,
}


def run_cim_cli(args: argparse.Namespace) -> int:
    """Run an ``approxsim cim`` subcommand from parsed arguments; returns the exit status.

    User errors (bad settings, missing files or checkpoints, unknown names) print one line
    to stderr and return 2; Ctrl-C returns 130 after saving completed results.
    """
    from approxsim.data import DatasetError
    from approxsim.experiments.train import TrainError, thread_settings
    from approxsim.models import ModelError
    from approxsim.multipliers import MultiplierError

    try:
        with thread_settings(getattr(args, "threads", None)):
            return _COMMANDS[args.action](args)
    except (CIMError, TrainError, DatasetError, ModelError, MultiplierError, OSError) as exc:
        print(f"approxsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("approxsim: interrupted", file=sys.stderr)
        return 130
