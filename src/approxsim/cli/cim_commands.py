"""What each ``approxsim cim`` subcommand does: load the checkpoint, call :mod:`approxsim.cim`,
print the result.

The options are declared in :mod:`approxsim.cli.cim`. Commands raise errors (the handler of
:mod:`approxsim.cli` prints them as one line, exit status 2) and return the exit status: 0, or
130 after Ctrl-C where a command keeps what is complete (``mc``, ``attack``, ``sweep``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from approxsim._io import OutputExistsError, atomic_write_json, check_output, stale_temporaries
from approxsim._runtime import Progress, ProgressLike
from approxsim.cim import (
    CIMError,
    DeviceConfig,
    Perturbation,
    SearchConfig,
    accuracy,
    chip,
    chip_seed,
    monotonicity_breaks,
    run_monte_carlo,
    run_sweep,
    sample_perturbation,
    sweep_table,
    worst_case_search,
)
from approxsim.cim.evaluation import DataLike, num_samples, split_data
from approxsim.cim.montecarlo import read_result
from approxsim.cim.training import checkpoint_method
from approxsim.cli.common import multiplier_from_args
from approxsim.plots.cim import plot_sweep
from approxsim.training import CHECKPOINT_FILE, TrainedModel, load_trained

__all__ = ["COMMANDS", "ATTACK_SCHEMA", "EVAL_SCHEMA", "device_config_from_args"]

ATTACK_SCHEMA = "approxsim.cim.attack/1"
EVAL_SCHEMA = "approxsim.cim.eval/1"


# ---------------------------------------------------------------------------- helpers
def device_config_from_args(args: argparse.Namespace, **over: Any) -> DeviceConfig:
    """The :class:`~approxsim.cim.DeviceConfig` of a ``cim`` subcommand's device options.

    Args:
        args: Parsed options (``--weight-bits`` ... and, where the command has them,
            ``--sigma``, ``--write-verify``, ``--verify-slices``, ``--read-noise``, ``--clip``).
        **over: Fields to set regardless of the options.

    Returns:
        The device model.

    Raises:
        CIMError: invalid settings.
    """
    kw: dict[str, Any] = {
        k: getattr(args, k) for k in _LAYOUT_OPTIONS if getattr(args, k) is not None
    }
    if hasattr(args, "sigma"):
        kw.update(
            sigma=args.sigma,
            write_verify_tolerance=args.write_verify,
            write_verify_slices=args.verify_slices,
            read_noise=args.read_noise,
            clip=args.clip,
        )
    elif getattr(args, "clip", False):
        kw["clip"] = True
    kw.update(over)
    return DeviceConfig(**kw)


#: The device layout options (``--weight-bits``, ``--device-bits``, ``--mapping``); left out,
#: :class:`~approxsim.cim.DeviceConfig`'s defaults apply.
_LAYOUT_OPTIONS = ("weight_bits", "device_bits", "mapping")


def _inputs(args: argparse.Namespace) -> list[Path]:
    """The files a command reads, which none of its outputs may replace: the checkpoint
    file(s) (``checkpoint.pt`` of a run folder) and a replayed perturbation."""
    given = args.checkpoint if isinstance(args.checkpoint, list) else [args.checkpoint]
    paths = [Path(c) / CHECKPOINT_FILE if Path(c).is_dir() else Path(c) for c in given]
    if getattr(args, "perturbation", None):
        paths.append(Path(args.perturbation))
    return paths


def _distinct(first: str | None, second: str | None, what: str) -> None:
    """Refuse two outputs of one command that name the same file."""
    if first and second and Path(first).absolute() == Path(second).absolute():
        raise OutputExistsError(f"{what} name the same file ({first}); name two files")


def _multiplier(args: argparse.Namespace) -> Any:
    """The named multiplier, or ``"fp32"`` (exact) when none is named."""
    if not any(getattr(args, k, None) for k in ("multiplier", "c", "approxtrain_lut", "lut")):
        return "fp32"
    return multiplier_from_args(args)


@dataclass(frozen=True)
class _Loaded:
    """A checkpoint loaded for a ``cim`` command, and how the command's output names it.

    Attributes:
        given: The checkpoint as the user named it (file or run folder), as printed.
        trained: The loaded model and its data.
        method: The training method (:func:`~approxsim.cim.training.checkpoint_method`).
    """

    given: str
    trained: TrainedModel
    method: str

    @property
    def model(self) -> nn.Module:
        """The model, converted, on its device, in eval mode."""
        return self.trained.model

    def describe(self) -> dict[str, Any]:
        """The fields every result file starts with."""
        t = self.trained
        return {
            "checkpoint": self.given,
            "model": t.model_name,
            "epoch": t.epoch,
            "method": self.method,
            "dataset": t.dataset,
            "multiplier": t.passes.forward.name,
        }

    def headline(self) -> str:
        """The ``checkpoint`` line of the text output."""
        return f"checkpoint   {self.given} ({self.method}, {self.trained.model_name})"


def _load(path: str, args: argparse.Namespace) -> _Loaded:
    """Load ``path`` with the command's multiplier, dataset and device options."""
    # include/exclude of cim commands choose the mapped layers; the converted layers are
    # the training run's, so none are passed here.
    trained = load_trained(
        path,
        _multiplier(args),
        dataset=args.dataset,
        data_dir=args.data_dir,
        device=args.device,
    )
    return _Loaded(path, trained, checkpoint_method(trained.state))


def _scored_data(loaded: _Loaded, args: argparse.Namespace) -> tuple[DataLike, dict[str, Any]]:
    """``--split`` from ``--offset``, at most ``--max-samples``, and its description."""
    data = loaded.trained.split(args.split)
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
    """The attack and the held-out split of ``--attack-split`` / ``--attack-samples`` /
    ``--heldout-samples``, and their description."""
    test = loaded.trained.test
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
        train = loaded.trained.split("train")
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


def _search_config(args: argparse.Namespace, **over: Any) -> SearchConfig:
    """The :class:`~approxsim.cim.SearchConfig` of the search options."""
    kw: dict[str, Any] = {
        "unit": args.unit,
        "steps": args.steps,
        "restarts": args.restarts,
        "step_size": args.step_size,
        "lr": args.lr,
        "kappa": args.kappa,
        "objective": args.objective,
        "space": args.space,
        "budget": args.budget,
        "batch_size": args.search_batch_size,
        "seed": args.seed,
    }
    kw.update(over)
    return SearchConfig(**kw)


def _progress(args: argparse.Namespace) -> Callable[[str, int], ProgressLike]:
    """The command's progress factory (silent with ``--no-progress``)."""
    return lambda desc, total: Progress(total, desc, not args.no_progress)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


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


# ---------------------------------------------------------------------------- mc
def _cmd_mc(args: argparse.Namespace) -> int:
    if args.resume and not args.out:
        raise CIMError("--resume needs --out (the result file to continue)")
    if args.resume and args.overwrite:
        raise CIMError("--resume continues --out and --overwrite replaces it: pass one")
    # The outputs are checked before anything is loaded, so a refusal costs nothing; the
    # library checks them again (precisely, with the resumed file at hand) before any chip.
    inputs = _inputs(args)
    _distinct(args.out, args.save_worst, "--out and --save-worst")
    if args.out:
        check_output(
            args.out,
            overwrite=args.overwrite or args.resume,
            inputs=inputs,
            flag="--resume (to continue that run) or --overwrite",
        )
    if args.save_worst:
        check_output(
            args.save_worst, overwrite=args.overwrite or args.resume, inputs=[*inputs, args.out]
        )
    loaded = _load(args.checkpoint, args)
    cfg = device_config_from_args(args)
    if cfg.sigma == 0 and cfg.read_noise == 0:
        raise CIMError("--sigma (or --read-noise) is 0: every chip would be the same")
    if not 0 < args.confidence < 1:
        raise CIMError(f"--confidence must lie in (0, 1), got {args.confidence}")
    data, data_info = _scored_data(loaded, args)
    run = run_monte_carlo(
        loaded.model,
        data,
        cfg,
        samples=args.samples,
        seed=args.seed,
        include=args.include,
        exclude=args.exclude,
        batch_size=args.batch_size,
        confidence=args.confidence,
        out=args.out,
        resume=args.resume,
        save_worst=args.save_worst,
        meta={**loaded.describe(), "data": data_info},
        progress=_progress(args),
        overwrite=args.overwrite,
        inputs=inputs,
    )
    if run.result is None:
        done = run.chips_done
        where = f"{done} chips are saved in {args.out}; continue with --resume" if args.out else ""
        print(f"approxsim: interrupted after {done} chips. {where}".rstrip(), file=sys.stderr)
        return 130
    out = run.document
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    res = run.result
    s = res.summary
    print(loaded.headline())
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


# ---------------------------------------------------------------------------- attack
def _cmd_attack(args: argparse.Namespace) -> int:
    inputs = _inputs(args)
    _distinct(args.save, args.out, "--save and --out")
    for path in (args.save, args.out):  # before the search, so a refusal costs nothing
        if path:
            check_output(path, overwrite=args.overwrite, inputs=inputs)
    loaded = _load(args.checkpoint, args)
    cfg = device_config_from_args(args)
    search = _search_config(args, eps=args.eps, method=args.method)
    attack, held, info = _attack_splits(loaded, args)
    search.components()  # a budget too small for the runs is refused before any work
    bar = _progress(args)(f"{args.method} search", search.total_budget * search.batch_size)
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
    res.perturbation.meta.update(checkpoint=str(loaded.given), data=info)
    out = {"schema": ATTACK_SCHEMA, **loaded.describe(), "data": info, **res.to_dict()}
    if args.save:
        saved = res.perturbation.save(args.save, overwrite=args.overwrite, inputs=inputs)
        out["perturbation_file"] = str(saved)
    if args.out:
        atomic_write_json(args.out, out, overwrite=args.overwrite, inputs=inputs)
    status = 130 if res.interrupted else 0
    if args.json:
        print(json.dumps(out, indent=1))
        return status
    st = res.stats
    print(loaded.headline())
    print(
        f"bound        |dw| <= {res.eps_weight:g} * max|w| per weight "
        f"(= |dg| <= {res.eps_device:g} per device)"
    )
    runs = ", ".join(f"{r['run']} {_pct(r['attack_accuracy'])}" for r in res.runs)
    print(
        f"search       {args.method} in {res.space} space: {runs}"
        + (" (INTERRUPTED: best so far)" if res.interrupted else "")
    )
    print(f"found by     {res.found_by}")
    c = res.cost
    print(
        f"cost         {c['gradient_steps']} of {c['budget']} gradient steps "
        f"({c['gradient_samples']} samples forward+backward), "
        f"{c['scoring_samples']} samples scored"
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
            f"--checkpoint {loaded.given} --perturbation {args.save})"
        )
    return status


# ---------------------------------------------------------------------------- eval
def _eval_chip(
    loaded: _Loaded, args: argparse.Namespace, cfg: DeviceConfig
) -> tuple[Perturbation | None, DeviceConfig, str]:
    """The chip ``cim eval`` scores: a saved perturbation, a sampled chip or the nominal one,
    its device model, and how the output names it."""
    if args.perturbation:
        pert = Perturbation.load(args.perturbation)
        given = {k: getattr(args, k) for k in _LAYOUT_OPTIONS if getattr(args, k) is not None}
        saved = pert.config.to_dict()
        clash = [
            f"--{k.replace('_', '-')} {v} (the file has {saved[k]})"
            for k, v in given.items()
            if saved[k] != v
        ]
        if clash:
            raise CIMError(
                f"{args.perturbation} was made for another device layout: "
                + ", ".join(clash)
                + "; drop these options (the file's layout is used) or pass the matching ones"
            )
        if cfg.sigma:
            raise CIMError("--perturbation and --sigma exclude each other: replay or sample")
        if cfg.clip and not pert.config.clip:
            raise CIMError(
                "--clip does not apply to --perturbation: the perturbation was made without "
                "clipping and is replayed as saved; drop --clip"
            )
        kind = f"perturbation {args.perturbation}"
        return pert, pert.config.replace(read_noise=cfg.read_noise), kind
    if cfg.sigma:
        pert = sample_perturbation(
            loaded.model,
            cfg,
            seed=chip_seed(args.seed, 0),
            include=args.include,
            exclude=args.exclude,
        )
        return pert, cfg, f"chip seed {args.seed} (sigma {cfg.sigma:g})"
    return None, cfg, "nominal chip (quantized, no variation)"


def _cmd_eval(args: argparse.Namespace) -> int:
    loaded = _load(args.checkpoint, args)
    data, info = _scored_data(loaded, args)
    pert, cfg, kind = _eval_chip(loaded, args, device_config_from_args(args))
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
    out = {
        "schema": EVAL_SCHEMA,
        **loaded.describe(),
        "data": info,
        "chip": kind,
        "device": cfg.to_dict(),
        "float_accuracy": float_acc,
        "accuracy": acc,
        "perturbation_stats": pert.stats(h.layers) if pert is not None else None,
        "perturbation_meta": pert.meta if pert is not None else None,
    }
    if args.json:
        print(json.dumps(out, indent=1, default=str))
        return 0
    print(loaded.headline())
    print(f"data         {info['split']}[{info['offset']}:{info['offset'] + info['samples']}]")
    print(f"chip         {kind}")
    print(f"float        {_pct(float_acc)}")
    print(f"accuracy     {_pct(acc)}")
    return 0


# ---------------------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace) -> int:
    from approxsim.cim import CIMTrainConfig, train_cim
    from approxsim.cli.train import training_config_from_args

    # The multiplier is optional for `cim train` (exact float32 when none is named).
    base = training_config_from_args(args, multiplier=_multiplier(args))
    cfg = CIMTrainConfig(
        train=base,
        method=args.method,
        device_model=device_config_from_args(args),
        eps=args.eps,
        adv_steps=args.adv_steps,
        adv_step_size=args.adv_step_size,
        include=tuple(args.include) if args.include else None,
        exclude=tuple(args.exclude) if args.exclude else None,
    )
    try:
        res = train_cim(cfg)
    except KeyboardInterrupt:
        return 130  # the training loop said what it kept
    final = res["final"]
    print(f"run          {res['out_dir']}")
    print(f"model        {res['model']} on {res['dataset']}, method {res['method']}")
    if final is not None:
        print(
            f"final        test acc {100 * final['test_acc']:.2f}% (float), "
            f"{100 * final['test_acc_chip']:.2f}% (nominal chip), epoch {final['epoch']}"
        )
    return 0


# ---------------------------------------------------------------------------- sweep
def _sweep_labels(args: argparse.Namespace, loaded: list[_Loaded]) -> list[str]:
    """One distinct label per checkpoint: ``--label``, else the training method (with the
    run's folder name where methods repeat)."""
    labels = args.label or [ld.method for ld in loaded]
    if len(set(labels)) != len(labels):
        labels = [
            f"{lab} ({Path(ld.given).name or ld.given})"
            for lab, ld in zip(labels, loaded, strict=True)
        ]
    return labels


def _cmd_sweep(args: argparse.Namespace) -> int:
    if args.label and len(args.label) != len(args.checkpoint):
        raise CIMError(
            f"{len(args.label)} --label for {len(args.checkpoint)} --checkpoint: give one "
            "label per checkpoint, or none"
        )
    if args.resume and args.overwrite:
        raise CIMError(
            "--resume continues the sweep in --out and --overwrite replaces it: pass one"
        )
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"--out {out_dir} is a file; name a folder for the sweep")
    json_path, png_path = out_dir / "sweep.json", out_dir / "sweep.png"
    inputs = _inputs(args)
    replace = args.resume or args.overwrite
    check_output(json_path, overwrite=replace, inputs=inputs, flag="--resume or --overwrite")
    check_output(png_path, overwrite=replace, inputs=inputs, flag="--resume or --overwrite")
    previous = read_result(json_path) if args.resume and json_path.exists() else None
    for tmp in stale_temporaries(out_dir, [json_path.name, png_path.name]):
        tmp.unlink(missing_ok=True)  # left by a sweep killed while writing
    cfg = device_config_from_args(args)
    loaded = [_load(c, args) for c in args.checkpoint]
    labels = _sweep_labels(args, loaded)
    first = loaded[0]
    attack, held, info = _attack_splits(first, args)
    for ld in loaded[1:]:
        if (ld.trained.dataset, ld.trained.test.num_classes) != (
            first.trained.dataset,
            first.trained.test.num_classes,
        ):
            raise CIMError("all checkpoints of a sweep must use the same dataset")
    latest: dict[str, Any] = {}

    def save(doc: dict[str, Any]) -> None:
        latest["doc"] = doc
        atomic_write_json(json_path, doc, inputs=inputs)

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
            search=_search_config(args, eps=1.0),
            methods=args.methods,
            include=args.include,
            exclude=args.exclude,
            batch_size=args.batch_size,
            data_info=info,
            model_info={lab: ld.describe() for lab, ld in zip(labels, loaded, strict=True)},
            previous=previous,
            on_update=save,
            progress=_progress(args),
        )
    except KeyboardInterrupt:
        if "doc" in latest:
            plot_sweep(latest["doc"], png_path, inputs=inputs)
        print(
            f"approxsim: interrupted; finished pieces are in {json_path} (continue with --resume)",
            file=sys.stderr,
        )
        return 130
    save(doc)
    plot_sweep(doc, png_path, inputs=inputs)
    print(sweep_table(doc, markdown=False))
    for b in monotonicity_breaks(doc):
        what = "repaired with the smaller bound's chip" if b["repaired"] else "not repaired"
        print(
            f"monotonicity {b['model']}: the search at eps {b['eps_large']:g} found "
            f"{_pct(b['attack_large'])} on the attack split, weaker than the chip of eps "
            f"{b['eps_small']:g} ({_pct(b['attack_small'])}); {what}"
        )
    print(f"attack split {info['attack']}, held-out {info['heldout']}; MC sigma = eps per device")
    print(f"result       {json_path}")
    print(f"plot         {png_path}")
    return 0


#: The handler of each ``approxsim cim`` subcommand.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "mc": _cmd_mc,
    "attack": _cmd_attack,
    "eval": _cmd_eval,
    "train": _cmd_train,
    "sweep": _cmd_sweep,
}
