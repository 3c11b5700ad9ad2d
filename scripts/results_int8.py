"""Post-training quantization of the LeNets with every listed integer multiplier.

For each trained float run ``runs/results/<model>-fp32-s<seed>`` (made by
``scripts/results.sh`` or ``approxsim train ... --multiplier fp32 --epochs 10``), convert the
model with quantized layers for each listed built-in integer multiplier (``QuantConfig()``:
8-bit, affine for unsigned tables, symmetric for signed ones, per-channel weights), calibrate
on the first 512 training images, and score the 10,000 test images. Results go to a JSON Lines
file (one record per model × seed × multiplier; a rerun skips records it already holds), then
a Markdown table and an accuracy-versus-MAE% plot:

    .venv/bin/python scripts/results_int8.py [--runs runs/results] [--out docs/results]
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


def main() -> None:
    """Measure what is missing, then print the table and write the plot."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/results"))
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    done = _measure(args.runs, args.out / "int8-ptq-lenets.jsonl")
    print(_table(done))
    _plot(done, args.out / "int8-ptq-lenets.png")


if __name__ == "__main__":
    main()
