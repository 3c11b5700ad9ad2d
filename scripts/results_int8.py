"""The LeNet results of docs/results-int8.md: post-training quantization and fine-tuning.

``ptq``: for each trained float run ``runs/results/<model>-fp32-s<seed>`` (made by
``scripts/results.sh`` or ``approxsim train ... --multiplier fp32 --epochs 10``), convert the
model with quantized layers for each listed built-in integer multiplier (``QuantConfig()``:
8-bit, affine for unsigned tables, symmetric for signed ones, per-channel weights), calibrate
on the first 512 training images, and score the 10,000 test images. Results go to a JSON Lines
file (one record per model × seed × multiplier; a rerun skips records it already holds), then
a Markdown table and an accuracy-versus-MAE% plot.

``finetune``: read the fine-tuning runs of ``scripts/results_int8.sh`` (``runs/results-int8``:
float control, ``ste``, ``lut`` and ``lut8``), write one record per run (its final test
accuracy, or why it stopped), print the Markdown tables of docs/results-int8.md and plot
accuracy against MAE% before and after fine-tuning:

    .venv/bin/python scripts/results_int8.py ptq [--runs runs/results] [--out docs/results]
    .venv/bin/python scripts/results_int8.py finetune [--tuned runs/results-int8] [--out ...]

``lutstats``: the ``lut`` gradient tables of six designs against the exact derivative, for
difference stencils 1 to 16 codes wide (the table of docs/quantization.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import approxsim
from approxsim.training import load_trained

MODELS = ("lenet300100", "lenet5")
SEEDS = (0, 1, 2)
CALIBRATION_IMAGES = 512
BATCH = 500


def _accuracy(model: torch.nn.Module, data: Any) -> float:
    correct = 0
    with torch.no_grad():
        for x, y in data.batches(BATCH):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / len(data)


def _score(run: Path, name: str | None) -> float:
    trained = load_trained(run)
    model = trained.model
    if name is not None:
        model = approxsim.convert_model(
            model, approxsim.get_int_multiplier(name), quant=approxsim.QuantConfig()
        )
        calib, _ = trained.split("train").batch(torch.arange(CALIBRATION_IMAGES))
        approxsim.calibrate(model, [calib])
    return _accuracy(model.eval(), trained.test)


def _measure(runs: Path, records: Path) -> list[dict[str, Any]]:
    done = (
        [json.loads(line) for line in records.read_text().splitlines()] if records.exists() else []
    )
    have = {(r["model"], r["seed"], r["multiplier"]) for r in done}
    names = [None, *approxsim.list_int_multipliers()]
    for model in MODELS:
        for seed in SEEDS:
            run = runs / f"{model}-fp32-s{seed}"
            for name in names:
                key = (model, seed, name or "fp32")
                if key in have:
                    continue
                start = time.perf_counter()
                acc = _score(run, name)
                rec = {"model": model, "seed": seed, "multiplier": key[2], "test_acc": acc}
                if name is not None:
                    m = approxsim.get_int_multiplier(name)
                    rec["fingerprint"] = m.fingerprint
                    rec["mae_percent"] = m.error_stats()["mae_percent"]
                with records.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
                done.append(rec)
                took = time.perf_counter() - start
                print(f"{model} s{seed} {key[2]:<14} {100 * acc:6.2f}%  ({took:.1f} s)", flush=True)
    return done


def _table(done: list[dict[str, Any]]) -> str:
    lines = []
    for model in MODELS:
        rows = [r for r in done if r["model"] == model]
        base = statistics.mean(r["test_acc"] for r in rows if r["multiplier"] == "fp32")
        lines += [
            f"### {model}",
            "",
            "| multiplier | fingerprint | MAE% | test acc (%) | gap to float (pp) |",
            "|---|---|---|---|---|",
        ]
        names = sorted(
            {r["multiplier"] for r in rows},
            key=lambda n: (
                n != "fp32",
                next((r.get("mae_percent", 0) for r in rows if r["multiplier"] == n), 0),
                n,
            ),
        )
        for n in names:
            accs = [100 * r["test_acc"] for r in rows if r["multiplier"] == n]
            first = next(r for r in rows if r["multiplier"] == n)
            mae = f"{first['mae_percent']:.3f}" if "mae_percent" in first else "–"
            fp = first.get("fingerprint", "")[:12] or "float32"
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            mean = statistics.mean(accs)
            gap = mean - 100 * base
            lines.append(f"| {n} | {fp} | {mae} | {mean:.2f} ± {sd:.2f} | {gap:+.2f} |")
        lines.append("")
    return "\n".join(lines)


def _plot(done: list[dict[str, Any]], path: Path) -> None:
    from approxsim.plots.common import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(MODELS), figsize=(11, 4.2), constrained_layout=True)
    for ax, model in zip(axes, MODELS, strict=True):
        rows = [r for r in done if r["model"] == model]
        base = 100 * statistics.mean(r["test_acc"] for r in rows if r["multiplier"] == "fp32")
        for signed, marker in ((False, "o"), (True, "s")):
            pts: dict[str, list[float]] = {}
            for r in rows:
                if (
                    r["multiplier"] != "fp32"
                    and approxsim.get_int_multiplier(r["multiplier"]).signed == signed
                ):
                    pts.setdefault(r["multiplier"], []).append(100 * r["test_acc"])
            xs = [next(r["mae_percent"] for r in rows if r["multiplier"] == n) for n in pts]
            ax.errorbar(
                xs,
                [statistics.mean(v) for v in pts.values()],
                yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in pts.values()],
                fmt=marker,
                capsize=2,
                label="signed (symmetric codes)" if signed else "unsigned (affine codes)",
            )
        ax.axhline(base, color="gray", linestyle="--", label="float32")
        ax.set_xscale("log")
        ax.set_xlabel("multiplier MAE% (EvoApproxLib definition)")
        ax.set_ylabel("test accuracy (%), post-training, mean ± std of 3 seeds")
        ax.set_title(f"{model} on Fashion-MNIST")
        ax.legend(fontsize=8)
    save_figure(fig, path, overwrite=True)


# ---------------------------------------------------------------------------- fine-tuning
FIRST_ROUND = ("drum4_u8", "mitchell_u8", "trunc8_s8", "bam_h3v8_s8")


def _gather(tuned: Path) -> list[dict[str, Any]]:
    """One record per fine-tuning run folder: its settings, final test accuracy, time."""
    records = []
    for run in sorted(tuned.iterdir()):
        if not (run / "config.json").exists():
            continue
        cfg = json.loads((run / "config.json").read_text())["config"]
        lines = (run / "metrics.jsonl").read_text().splitlines()
        metrics = [json.loads(line) for line in lines]
        grad = cfg.get("grad") or "float"
        rec: dict[str, Any] = {
            "run": run.name,
            "model": cfg["model"],
            "multiplier": cfg["multiplier"],
            "grad": grad if grad != "lut" else f"lut{cfg.get('lut_step') or 1}",
            "seed": cfg["seed"],
            "epochs": cfg["epochs"],
            "epochs_completed": len(metrics),
            "seconds": round(sum(m["seconds"] for m in metrics), 1),
        }
        if (run / "stopped.txt").exists():
            rec["stopped"] = (run / "stopped.txt").read_text().strip()
        elif len(metrics) < cfg["epochs"]:
            continue  # still running, or interrupted: not a result yet
        else:
            rec["test_acc"] = metrics[-1]["test_acc"]
        records.append(rec)
    return records


def _cell(records: list[dict[str, Any]], **key: Any) -> str:
    """Mean ± sd (or the one value, or why it stopped) of the matching runs, in %."""
    rows = [r for r in records if all(r[k] == v for k, v in key.items())]
    if not rows:
        return ""
    if any("stopped" in r for r in rows):
        return f"stopped ({sum('stopped' in r for r in rows)} of {len(rows)})"
    accs = [100 * r["test_acc"] for r in rows]
    if len(accs) == 1:
        return f"{accs[0]:.2f}"
    return f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f} ({len(accs)})"


def _finetune_tables(records: list[dict[str, Any]], ptq: list[dict[str, Any]]) -> str:
    lines = []
    for model in MODELS:
        rec = [r for r in records if r["model"] == model and r["seed"] == 0 and "test_acc" in r]
        pt = {r["multiplier"]: r for r in ptq if r["model"] == model and r["seed"] == 0}
        control = next((r for r in rec if r["multiplier"] == "fp32"), None)
        lines += [
            f"#### {model}",
            "",
            "| multiplier | MAE% | post-training | `ste`, 2 epochs | gain (pp) | to control (pp) |",
            "|---|---|---|---|---|---|",
        ]
        for name in ["fp32", *approxsim.list_int_multipliers()]:
            grad = "ste" if name != "fp32" else "float"
            tuned = [r for r in rec if r["multiplier"] == name and r["grad"] == grad]
            if not tuned:
                continue
            mae = f"{pt[name]['mae_percent']:.3f}" if "mae_percent" in pt[name] else "–"
            a, b = 100 * pt[name]["test_acc"], 100 * tuned[0]["test_acc"]
            label = name if name != "fp32" else "fp32 (float control)"
            gap = "" if control is None else f"{b - 100 * control['test_acc']:+.2f}"
            lines.append(f"| {label} | {mae} | {a:.2f} | {b:.2f} | {b - a:+.2f} | {gap} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _seed_tables(records: list[dict[str, Any]], ptq: list[dict[str, Any]]) -> str:
    rec = [r for r in records if r["model"] == "lenet5"]
    pt = [r for r in ptq if r["model"] == "lenet5"]
    lines = [
        "| multiplier | post-training | `ste` | `lut` | `lut8` |",
        "|---|---|---|---|---|",
        f"| fp32 (float control) | {_cell(pt, multiplier='fp32')} | "
        f"{_cell(rec, multiplier='fp32')} | | |",
    ]
    for name in FIRST_ROUND:
        cells = [_cell(pt, multiplier=name)]
        cells += [_cell(rec, multiplier=name, grad=g) for g in ("ste", "lut1", "lut8")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _finetune_plot(records: list[dict[str, Any]], ptq: list[dict[str, Any]], path: Path) -> None:
    from approxsim.plots.common import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(MODELS), figsize=(11, 4.2), constrained_layout=True)
    for ax, model in zip(axes, MODELS, strict=True):
        tuned = {
            r["multiplier"]: 100 * r["test_acc"]
            for r in records
            if r["model"] == model and r["seed"] == 0 and r["grad"] == "ste" and "test_acc" in r
        }
        pt = {r["multiplier"]: r for r in ptq if r["model"] == model and r["seed"] == 0}
        # The exact tables (MAE 0) have no place on a log axis; the tables list them.
        names = [n for n in tuned if n in pt and pt[n].get("mae_percent", 0) > 0]
        xs = [pt[n]["mae_percent"] for n in names]
        ax.scatter(xs, [100 * pt[n]["test_acc"] for n in names], marker="x", label="post-training")
        ax.scatter(xs, [tuned[n] for n in names], marker="o", label="ste fine-tuned, 2 epochs")
        for n, x in zip(names, xs, strict=True):
            ax.plot([x, x], [100 * pt[n]["test_acc"], tuned[n]], color="lightgray", zorder=0)
        ax.axhline(100 * pt["fp32"]["test_acc"], color="gray", linestyle="--", label="float32")
        control = [
            100 * r["test_acc"]
            for r in records
            if r["model"] == model and r["multiplier"] == "fp32" and r["seed"] == 0
        ]
        if control:
            ax.axhline(control[0], color="black", linestyle=":", label="float32 fine-tuned")
        if names:
            ax.set_xscale("log")
        ax.set_xlabel("multiplier MAE% (EvoApproxLib definition)")
        ax.set_ylabel("test accuracy (%), seed 0")
        ax.set_title(f"{model} on Fashion-MNIST ({len(names)} approximate designs)")
        ax.legend(fontsize=8)
    save_figure(fig, path, overwrite=True)


def _finetune_report(tuned: Path, out: Path) -> None:
    """Gather the fine-tunings into ``out/int8-finetune-lenets.jsonl``, print the tables,
    write ``out/int8-finetune-lenets.png``."""
    from approxsim._io import atomic_write_lines

    records = _gather(tuned)
    atomic_write_lines(out / "int8-finetune-lenets.jsonl", records)
    ptq_file = out / "int8-ptq-lenets.jsonl"
    ptq = [json.loads(line) for line in ptq_file.read_text().splitlines()]
    print("### Every design run, seed 0\n")
    print(_finetune_tables(records, ptq))
    print("### lenet5, seeds 0-2\n")
    print(_seed_tables(records, ptq))
    _finetune_plot(records, ptq, out / "int8-finetune-lenets.png")


# ---------------------------------------------------------------------------- lut tables
LUT_DESIGNS = ("drum4_u8", "drum3_u8", "mitchell_u8", "trunc8_s8", "bam_h3v8_s8", "trunc8_u8")


def _lut_stats() -> str:
    """How far the ``lut`` gradient tables stray from the exact derivative: max and 99th
    percentile of ``Ga / b`` over the pairs with ``|b| >= 16``, per stencil half-width."""
    from approxsim.nn.quant import lut_gradient_tables

    steps = (1, 2, 4, 8, 16)
    lines = [
        "| design (8-bit codes) | Ga = 0 (b != 0, h = 1) | "
        + " | ".join(f"h = {h} max (p99)" for h in steps)
        + " |",
        "|---|---|" + "---|" * len(steps),
    ]
    for name in LUT_DESIGNS:
        mult = approxsim.get_int_multiplier(name)
        cells = []
        for h in steps:
            scheme = approxsim.QuantConfig(grad="lut", lut_step=h).resolve(mult)
            ga, _ = lut_gradient_tables(scheme, torch.device("cpu"))
            b = torch.arange(scheme.qmin, scheme.qmax + 1, dtype=torch.float32)
            b = b[None, :].expand_as(ga)
            if h == 1:
                zero = float((ga[b != 0] == 0).double().mean())
            r = (ga / b)[b.abs() >= 16].double()
            cells.append(f"{float(r.max()):.2f} ({float(r.quantile(0.99)):.2f})")
        lines.append(f"| {name} ({scheme.kind}) | {100 * zero:.0f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Measure what is missing (``ptq``) or gather the fine-tunings (``finetune``), then print
    the tables and write the plot."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="?", choices=("ptq", "finetune", "lutstats"), default="ptq")
    p.add_argument("--runs", type=Path, default=Path("runs/results"))
    p.add_argument("--tuned", type=Path, default=Path("runs/results-int8"))
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "lutstats":
        print(_lut_stats())
        return
    if args.what == "finetune":
        _finetune_report(args.tuned, args.out)
        return
    done = _measure(args.runs, args.out / "int8-ptq-lenets.jsonl")
    print(_table(done))
    _plot(done, args.out / "int8-ptq-lenets.png")


if __name__ == "__main__":
    main()
