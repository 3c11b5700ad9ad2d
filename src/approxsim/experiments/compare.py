"""Compare training runs: final and best test accuracy, the gap to a baseline, and curves.

Reads only the files :func:`approxsim.experiments.train.train` writes (``config.json`` and
``metrics.jsonl``), so runs can be compared while they are still going, or on a machine
without the data. ``approxsim compare RUN_DIR... [--baseline RUN_DIR] [--plot curves.png]
[--json]`` on the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from approxsim._text import text_table
from approxsim.errors import ApproxsimError

__all__ = [
    "CompareError",
    "Run",
    "load_run",
    "compare_runs",
    "format_comparison",
    "compare_seed_groups",
    "format_seed_groups",
    "plot_runs",
    "add_compare_parser",
    "run_compare_cli",
]

COMPARE_SCHEMA = "approxsim.compare/1"
_CONFIG_FILE = "config.json"
_METRICS_FILE = "metrics.jsonl"


class CompareError(ApproxsimError, ValueError):
    """A run folder cannot be read; the message says which file and why."""


@dataclass(frozen=True)
class Run:
    """One training run as read from its folder.

    Attributes:
        path: The run folder.
        config: The ``config`` section of ``config.json`` (resolved settings).
        multipliers: Multiplier names per pass (``forward``, ``grad_input``, ``grad_weight``).
        history: The per-epoch records of ``metrics.jsonl``, in epoch order.
        label: Short name for tables and legends (the multiplier, plus the backward
            multipliers when they differ).
    """

    path: Path
    config: dict[str, Any]
    multipliers: dict[str, str]
    history: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""

    @property
    def exact(self) -> bool:
        """True when all three passes used exact float32."""
        return all(name == "fp32" for name in self.multipliers.values())


def _label(multipliers: dict[str, str]) -> str:
    fwd, gi, gw = multipliers["forward"], multipliers["grad_input"], multipliers["grad_weight"]
    if gi == fwd and gw == fwd:
        return fwd
    return f"{fwd} (grad_input={gi}, grad_weight={gw})"


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Read a run folder written by ``approxsim train``.

    A last line of ``metrics.jsonl`` cut short (the run was killed while writing it) is
    ignored; any other unreadable line is an error.

    Args:
        run_dir: The folder holding ``config.json`` and ``metrics.jsonl``.

    Returns:
        The :class:`Run`.

    Raises:
        CompareError: the folder or its files are missing or malformed.
    """
    path = Path(run_dir)
    cfg_path = path / _CONFIG_FILE
    if not path.is_dir():
        raise CompareError(f"{path} is not a folder; name run folders written by approxsim train")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        config = meta["config"]
        multipliers = {role: meta["multipliers"][role]["name"] for role in _ROLES}
    except FileNotFoundError:
        raise CompareError(
            f"{path} is not a training run: it has no {_CONFIG_FILE} (written by approxsim train)"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CompareError(
            f"{cfg_path} is malformed ({exc!r}); it was not written by "
            "approxsim train or it is damaged"
        ) from None
    history: list[dict[str, Any]] = []
    metrics = path / _METRICS_FILE
    if metrics.exists():
        lines = metrics.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                int(record["epoch"])
            except (ValueError, KeyError, TypeError):
                if i == len(lines) - 1:
                    break  # an interrupted write; the checkpoint does not include it either
                raise CompareError(f"{metrics}: line {i + 1} is not a metrics record") from None
            history.append(record)
    history.sort(key=lambda r: int(r["epoch"]))
    return Run(path, config, multipliers, history, _label(multipliers))


_ROLES = ("forward", "grad_input", "grad_weight")


def _acc(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) else None


def compare_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    baseline: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Final and best test accuracy of each run and its gap to a baseline run.

    Args:
        run_dirs: Run folders.
        baseline: The reference run (added to the runs if not among them). Default: the
            first run whose three passes are exact float32, if any.

    Returns:
        ``{"schema", "baseline": path or None, "runs": [row, ...]}``; each row has ``run``,
        ``label``, ``model``, ``dataset``, ``multipliers``, ``epochs`` (planned),
        ``epochs_completed``, ``final_test_acc``, ``best_test_acc``, ``best_epoch``,
        ``final_train_loss``, ``gap_final`` and ``gap_best`` (accuracy minus the baseline's
        final accuracy, as fractions; ``None`` without a baseline), and ``is_baseline``.

    Raises:
        CompareError: no runs, or an unreadable run folder.
    """
    if not run_dirs:
        raise CompareError("name at least one run folder")
    runs = [load_run(d) for d in run_dirs]
    base: Run | None = None
    if baseline is not None:
        want = Path(baseline).resolve()
        base = next((r for r in runs if r.path.resolve() == want), None)
        if base is None:
            base = load_run(baseline)
            runs.insert(0, base)
    else:
        base = next((r for r in runs if r.exact), None)
    base_final = _acc(base.history[-1].get("test_acc")) if base and base.history else None
    labels = [r.label for r in runs]
    rows = []
    for run in runs:
        label = run.label
        if labels.count(label) > 1:
            label = f"{label} [{run.path.name}]"
        final = run.history[-1] if run.history else {}
        accs = [
            (a, int(r["epoch"])) for r in run.history if (a := _acc(r.get("test_acc"))) is not None
        ]
        best_acc, best_epoch = max(accs, key=lambda t: t[0]) if accs else (None, None)
        final_acc = _acc(final.get("test_acc"))
        rows.append(
            {
                "run": str(run.path),
                "label": label,
                "model": run.config.get("model"),
                "dataset": run.config.get("dataset"),
                "multipliers": dict(run.multipliers),
                "epochs": run.config.get("epochs"),
                "epochs_completed": len(run.history),
                "final_test_acc": final_acc,
                "best_test_acc": best_acc,
                "best_epoch": best_epoch,
                "final_train_loss": _acc(final.get("train_loss")),
                "gap_final": None
                if base_final is None or final_acc is None
                else final_acc - base_final,
                "gap_best": None
                if base_final is None or best_acc is None
                else best_acc - base_final,
                "is_baseline": run is base,
            }
        )
    return {
        "schema": COMPARE_SCHEMA,
        "baseline": str(base.path) if base is not None else None,
        "runs": rows,
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _pp(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.2f} pp"


def format_comparison(result: dict[str, Any]) -> str:
    """A text table of :func:`compare_runs`' result (baseline marked with ``*``)."""
    header = (
        "run",
        "multiplier",
        "epochs",
        "final acc",
        "best acc (epoch)",
        "gap final",
        "gap best",
    )
    rows = [header]
    for r in result["runs"]:
        best = _pct(r["best_test_acc"])
        if r["best_epoch"] is not None:
            best += f" ({r['best_epoch']})"
        epochs = f"{r['epochs_completed']}/{r['epochs']}"
        rows.append(
            (
                ("* " if r["is_baseline"] else "  ") + Path(r["run"]).name,
                r["label"],
                epochs,
                _pct(r["final_test_acc"]),
                best,
                "baseline" if r["is_baseline"] else _pp(r["gap_final"]),
                "" if r["is_baseline"] else _pp(r["gap_best"]),
            )
        )
    lines = text_table(rows[0], rows[1:], left=2, rule="columns")
    if result["baseline"] is None:
        lines.append("(no baseline: pass --baseline RUN_DIR or include an fp32 run)")
    else:
        lines.append("(* baseline; gaps are accuracy minus the baseline's final accuracy)")
    return "\n".join(lines)


#: Settings that do not change what a run computes (besides ``seed``, which groups vary).
_NOT_RESULT_SETTINGS = frozenset(
    {
        "seed",
        "out_dir",
        "resume",
        "overwrite",
        "progress",
        "threads",
        "workers",
        "device",
        "data_dir",
    }
)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, var**0.5


def compare_seed_groups(run_dirs: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """Runs that differ only in their seed, summarized per group: mean ± sample std.

    Only runs that completed all their planned epochs enter the statistics, so a table made
    while some runs are still going says how many seeds it rests on.

    Args:
        run_dirs: Run folders.

    Returns:
        ``{"schema", "groups": [group, ...]}`` in first-seen order; each group has ``model``,
        ``dataset``, ``label``, ``multipliers``, ``epochs``, ``seeds`` (all seeds in the group),
        ``seeds_complete``, ``final_mean`` / ``final_std`` and ``best_mean`` / ``best_std``
        (test accuracy as fractions over the complete runs; std ``None`` below two runs),
        ``gap_final`` (``final_mean`` minus that of the exact fp32 group of the same model and
        dataset, or ``None``) and ``runs`` (folders).

    Raises:
        CompareError: no runs, or an unreadable run folder.
    """
    if not run_dirs:
        raise CompareError("name at least one run folder")
    groups: dict[str, list[Run]] = {}
    for run in (load_run(d) for d in run_dirs):
        settings = {k: v for k, v in run.config.items() if k not in _NOT_RESULT_SETTINGS}
        key = json.dumps([settings, run.multipliers], sort_keys=True, default=str)
        groups.setdefault(key, []).append(run)
    rows: list[dict[str, Any]] = []
    for members in groups.values():
        first = members[0]
        planned = first.config.get("epochs")
        done = [r for r in members if r.history and len(r.history) >= (planned or 0)]
        finals = [a for r in done if (a := _acc(r.history[-1].get("test_acc"))) is not None]
        bests = [
            max(a for h in r.history if (a := _acc(h.get("test_acc"))) is not None)
            for r in done
            if any(_acc(h.get("test_acc")) is not None for h in r.history)
        ]
        final_mean, final_std = _mean_std(finals)
        best_mean, best_std = _mean_std(bests)
        rows.append(
            {
                "model": first.config.get("model"),
                "dataset": first.config.get("dataset"),
                "label": first.label,
                "multipliers": dict(first.multipliers),
                "exact": first.exact,
                "epochs": planned,
                "seeds": [r.config.get("seed") for r in members],
                "seeds_complete": len(done),
                "final_mean": final_mean,
                "final_std": final_std,
                "best_mean": best_mean,
                "best_std": best_std,
                "runs": [str(r.path) for r in members],
            }
        )
    for row in rows:
        base = next(
            (
                g
                for g in rows
                if g["exact"] and (g["model"], g["dataset"]) == (row["model"], row["dataset"])
            ),
            None,
        )
        row["gap_final"] = (
            None
            if base is None or base["final_mean"] is None or row["final_mean"] is None
            else row["final_mean"] - base["final_mean"]
        )
    return {"schema": COMPARE_SCHEMA, "groups": rows}


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def format_seed_groups(result: dict[str, Any]) -> str:
    """A Markdown table of :func:`compare_seed_groups`' result (accuracies in %)."""
    lines = [
        "| model | multiplier | epochs | seeds | final test acc (%) | best test acc (%) "
        "| gap to fp32 (pp) |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in result["groups"]:
        gap = "-" if g["gap_final"] is None else f"{100 * g['gap_final']:+.2f}"
        lines.append(
            f"| {g['model']} | {g['label']} | {g['epochs']} "
            f"| {g['seeds_complete']}/{len(g['seeds'])} "
            f"| {_pm(g['final_mean'], g['final_std'])} | {_pm(g['best_mean'], g['best_std'])} "
            f"| {gap} |"
        )
    return "\n".join(lines)


def plot_runs(
    runs: Sequence[Run | str | os.PathLike[str]], path: str | os.PathLike[str], *, dpi: int = 120
) -> Path:
    """Draw train loss and test accuracy per epoch of several runs on one figure.

    Two panels side by side (train loss, test accuracy); one line per run, labelled by its
    multiplier (and the folder name where two runs share a multiplier).

    Args:
        runs: :class:`Run` objects or run folders.
        path: Output image (format from the suffix: ``.png``, ``.pdf``, ``.svg`` ...).
        dpi: Resolution of raster formats.

    Returns:
        The path written.

    Raises:
        CompareError: no runs, or an unreadable run folder.
    """
    loaded = [r if isinstance(r, Run) else load_run(r) for r in runs]
    if not loaded:
        raise CompareError("name at least one run to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    labels = [r.label for r in loaded]
    for run in loaded:
        label = run.label if labels.count(run.label) == 1 else f"{run.label} [{run.path.name}]"
        epochs = [int(r["epoch"]) for r in run.history]
        loss = [r.get("train_loss") for r in run.history]
        acc = [a * 100 if (a := _acc(r.get("test_acc"))) is not None else None for r in run.history]
        style = {"marker": "o", "markersize": 3, "linewidth": 1.5}
        (line,) = ax_loss.plot(
            epochs, [float("nan") if v is None else v for v in loss], label=label, **style
        )
        ax_acc.plot(
            epochs,
            [float("nan") if v is None else v for v in acc],
            label=label,
            color=line.get_color(),
            **style,
        )
    ax_loss.set_title("train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_acc.set_title("test accuracy")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_acc.legend(title="multiplier", fontsize="small")
    models = {(r.config.get("model"), r.config.get("dataset")) for r in loaded}
    if len(models) == 1:
        model, dataset = models.pop()
        fig.suptitle(f"{model} on {dataset}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


# ---------------------------------------------------------------------------- CLI
def add_compare_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``approxsim compare`` to the top-level subparsers (sets ``action=None``).

    Args:
        subparsers: What ``ArgumentParser.add_subparsers(dest="command")`` returned.

    Returns:
        The ``compare`` parser.
    """
    p = subparsers.add_parser(
        "compare",
        help="compare training runs (accuracy table, curves)",
        description=(
            "Print final and best test accuracy of training runs and their gap to a baseline "
            "run (default: the first exact fp32 run), and optionally plot their curves."
        ),
    )
    p.set_defaults(action=None)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders of approxsim train")
    p.add_argument("--baseline", metavar="RUN_DIR", help="reference run (default: first fp32 run)")
    p.add_argument("--plot", metavar="FILE.png", help="write train loss / test accuracy curves")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--group-seeds",
        action="store_true",
        help="one row per group of runs that differ only in --seed: mean ± std of complete "
        "runs, as a Markdown table",
    )
    return p


def run_compare_cli(args: argparse.Namespace) -> int:
    """Run ``approxsim compare`` from parsed arguments; returns the exit status (2: user
    error)."""
    try:
        if args.group_seeds:
            if args.baseline or args.plot:
                raise CompareError("--group-seeds takes neither --baseline nor --plot")
            grouped = compare_seed_groups(args.runs)
            print(json.dumps(grouped, indent=1) if args.json else format_seed_groups(grouped))
            return 0
        result = compare_runs(args.runs, args.baseline)
        if args.plot:
            dirs = [r["run"] for r in result["runs"]]
            result["plot"] = str(plot_runs(dirs, args.plot))
    except (CompareError, OSError) as exc:
        print(f"approxsim: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_comparison(result))
        if args.plot:
            print(f"plot written to {result['plot']}")
    return 0
