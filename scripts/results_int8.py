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
GRADS = ("ste", "lut1")


def _gather(tuned: Path, previous: Path) -> list[dict[str, Any]]:
    """One record per fine-tuning run: from its run folder (settings, final test accuracy,
    time), else the record an earlier report kept of it in ``previous`` (runs made where their
    folders are not at hand)."""
    records: dict[str, dict[str, Any]] = {}
    if previous.exists():
        for line in previous.read_text().splitlines():
            rec = json.loads(line)
            records[rec["run"]] = rec
    for run in sorted(tuned.iterdir()) if tuned.is_dir() else []:
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
        records[run.name] = rec
    return [records[k] for k in sorted(records)]


def _accs(records: list[dict[str, Any]], **key: Any) -> list[float]:
    """The test accuracies (%) of the finished runs matching ``key``."""
    rows = [r for r in records if all(r[k] == v for k, v in key.items())]
    return [100 * r["test_acc"] for r in rows if "test_acc" in r]


def _cell(records: list[dict[str, Any]], **key: Any) -> str:
    """Mean ± sd (or the one value) of the matching runs in %, with the seed count, and how
    many stopped."""
    rows = [r for r in records if all(r[k] == v for k, v in key.items())]
    if not rows:
        return ""
    accs = _accs(records, **key)
    stopped = sum("stopped" in r for r in rows)
    if not accs:
        return f"stopped ({stopped} of {len(rows)})"
    cell = f"{accs[0]:.2f}" if len(accs) == 1 else f"{statistics.mean(accs):.2f} ± "
    if len(accs) > 1:
        cell += f"{statistics.stdev(accs):.2f}"
    cell += f" ({len(accs)})"
    return cell + (f", {stopped} stopped" if stopped else "")


def _gap(records: list[dict[str, Any]], control: list[float], **key: Any) -> str:
    accs = _accs(records, **key)
    if not accs or not control:
        return ""
    return f"{statistics.mean(accs) - statistics.mean(control):+.2f}"


def _finetune_tables(records: list[dict[str, Any]], ptq: list[dict[str, Any]]) -> str:
    """Per model: every design's post-training, ``ste`` and ``lut`` accuracy over the seeds,
    and the gap of each fine-tuning's mean to the float control's."""
    lines = []
    for model in MODELS:
        rec = [r for r in records if r["model"] == model]
        pt = [r for r in ptq if r["model"] == model]
        mae = {r["multiplier"]: r.get("mae_percent") for r in pt}
        control = _accs(rec, multiplier="fp32", grad="float")
        lines += [
            f"#### {model}",
            "",
            "| multiplier | MAE% | post-training | `ste`, 2 epochs | `lut`, 2 epochs "
            "| `ste` to control (pp) | `lut` to control (pp) |",
            "|---|---|---|---|---|---|---|",
            f"| fp32 (float control) | – | {_cell(pt, multiplier='fp32')} "
            f"| {_cell(rec, multiplier='fp32', grad='float')} | | | |",
        ]
        for name in sorted(approxsim.list_int_multipliers(), key=lambda n: mae.get(n) or 0.0):
            cells = [_cell(rec, multiplier=name, grad=g) for g in GRADS]
            if not any(cells):
                continue
            gaps = [_gap(rec, control, multiplier=name, grad=g) for g in GRADS]
            m = mae.get(name)
            lines.append(
                f"| {name} | {'–' if m is None else f'{m:.3f}'} | {_cell(pt, multiplier=name)} | "
                + " | ".join(cells + gaps)
                + " |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def _lut8_table(records: list[dict[str, Any]]) -> str:
    """The designs fine-tuned with ``--lut-step 8``, beside their 1-code ``lut`` and ``ste``."""
    runs = sorted({(r["model"], r["multiplier"]) for r in records if r["grad"] == "lut8"})
    lines = [
        "| model | multiplier | `ste` | `lut` (1 code) | `lut8` (8 codes) |",
        "|---|---|---|---|---|",
    ]
    for model, name in runs:
        cells = [_cell(records, model=model, multiplier=name, grad=g) for g in (*GRADS, "lut8")]
        lines.append(f"| {model} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _finetune_plot(records: list[dict[str, Any]], ptq: list[dict[str, Any]], path: Path) -> None:
    from approxsim.plots.common import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(MODELS), figsize=(11, 4.2), constrained_layout=True)
    for ax, model in zip(axes, MODELS, strict=True):
        rec = [r for r in records if r["model"] == model]
        pt = {r["multiplier"]: r for r in ptq if r["model"] == model and r["seed"] == 0}
        # The exact tables (MAE 0) have no place on a log axis; the tables list them.
        names = [n for n in pt if n != "fp32" and pt[n].get("mae_percent", 0) > 0]
        xs = [pt[n]["mae_percent"] for n in names]
        ptq_mean = [statistics.mean(_accs(ptq, model=model, multiplier=n)) for n in names]
        ax.scatter(xs, ptq_mean, marker="x", color="gray", label="post-training")
        for grad, marker in (("ste", "o"), ("lut1", "^")):
            pts = [(x, _accs(rec, multiplier=n, grad=grad)) for n, x in zip(names, xs, strict=True)]
            pts = [(x, statistics.mean(a)) for x, a in pts if a]
            if pts:
                ax.scatter(
                    *zip(*pts, strict=True), marker=marker, label=f"{grad[:3]} fine-tuned, 2 epochs"
                )
        control = _accs(rec, multiplier="fp32", grad="float")
        ax.axhline(
            statistics.mean(_accs(ptq, model=model, multiplier="fp32")),
            color="gray",
            linestyle="--",
            label="float32",
        )
        if control:
            ax.axhline(
                statistics.mean(control), color="black", linestyle=":", label="float32 fine-tuned"
            )
        if names:
            ax.set_xscale("log")
        ax.set_xlabel("multiplier MAE% (EvoApproxLib definition)")
        ax.set_ylabel("test accuracy (%), mean over seeds")
        ax.set_title(f"{model} on Fashion-MNIST ({len(names)} approximate designs)")
        ax.legend(fontsize=8)
    save_figure(fig, path, overwrite=True)


def _finetune_report(tuned: Path, out: Path) -> None:
    """Gather the fine-tunings into ``out/int8-finetune-lenets.jsonl`` (keeping the records of
    runs whose folders are elsewhere), print the tables, write ``out/int8-finetune-lenets.png``."""
    from approxsim._io import atomic_write_lines

    records_file = out / "int8-finetune-lenets.jsonl"
    records = _gather(tuned, records_file)
    atomic_write_lines(records_file, records)
    ptq_file = out / "int8-ptq-lenets.jsonl"
    ptq = [json.loads(line) for line in ptq_file.read_text().splitlines()]
    print("### Every design run so far (the number of seeds in brackets)\n")
    print(_finetune_tables(records, ptq))
    print("### The 8-code stencil\n")
    print(_lut8_table(records))
    _finetune_plot(records, ptq, out / "int8-finetune-lenets.png")


# ---------------------------------------------------------------------------- lut tables
LUT_DESIGNS = (
    "drum4_u8", "drum3_u8", "mitchell_u8", "trunc8_s8", "bam_h3v8_s8", "trunc8_u8",
    "bam_h2v6_u8", "bam_h3v8_u8", "mitchell3_u8", "drum5_u8", "bam_h4v9_s8",
)  # fmt: skip


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
