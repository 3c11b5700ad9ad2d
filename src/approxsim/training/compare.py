"""Compare training runs: final and best test accuracy, the gap to a baseline, and groups
of runs that differ only in their seed.

Reads run folders through :mod:`approxsim.training.rundir` (``config.json`` and
``metrics.jsonl`` only), so runs can be compared while they are still going, or on a machine
without the data. DQN runs of ``approxsim replay dqn`` (read through
:mod:`approxsim.replay.runs`) are compared by their return instead: the mean return of the
last 20 episodes (``return_recent``) at the last record (final) and its largest value (best),
per record step instead of per epoch; training and DQN runs are not mixed in one table.
``approxsim compare`` prints these tables; :func:`approxsim.plots.curves.plot_runs` draws the
training curves, :func:`approxsim.plots.replay.plot_return_curves` the DQN ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from approxsim._text import text_table
from approxsim.errors import ApproxsimError
from approxsim.training.rundir import RunFolderError, read_run

__all__ = [
    "COMPARE_SCHEMA",
    "CompareError",
    "Run",
    "load_run",
    "compare_runs",
    "format_comparison",
    "compare_seed_groups",
    "format_seed_groups",
    "number_or_none",
]

COMPARE_SCHEMA = "approxsim.compare/1"


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
            multipliers when they differ; an integer multiplier with its fingerprint's first
            12 hex digits and the quantized backward; a DQN run's replay sampler and options).
        kind: ``"train"`` (``approxsim train``) or ``"dqn"`` (``approxsim replay dqn``, whose
            history has one record per ``step``).
    """

    path: Path
    config: dict[str, Any]
    multipliers: dict[str, str]
    history: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""
    kind: str = "train"

    @property
    def metric(self) -> str:
        """The record field compared: ``test_acc``, or ``return_recent`` for DQN runs."""
        return "return_recent" if self.kind == "dqn" else "test_acc"

    @property
    def planned(self) -> Any:
        """Planned length: epochs, or steps for DQN runs."""
        return self.config.get("steps" if self.kind == "dqn" else "epochs")

    @property
    def completed(self) -> int:
        """Length done: epochs recorded, or the last record's step for DQN runs."""
        if self.kind == "dqn":
            return int(self.history[-1]["step"]) if self.history else 0
        return len(self.history)

    def position(self, record: dict[str, Any]) -> int:
        """A record's epoch, or its step for DQN runs."""
        return int(record["step" if self.kind == "dqn" else "epoch"])

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
    """Read a run folder written by ``approxsim train`` (through
    :func:`approxsim.training.rundir.read_run`).

    A last line of ``metrics.jsonl`` cut short (the run was killed while writing it) is
    ignored; any other unreadable line is an error.

    Args:
        run_dir: The folder holding ``config.json`` and ``metrics.jsonl``.

    Returns:
        The :class:`Run`.

    Raises:
        CompareError: the folder or its files are missing or malformed.
    """
    from approxsim.replay.runs import is_dqn_run

    if is_dqn_run(run_dir):
        return _load_dqn_run(run_dir)
    try:
        files = read_run(run_dir)
    except RunFolderError as exc:
        raise CompareError(str(exc)) from None
    multipliers = files.multipliers
    forward = files.meta["multipliers"]["forward"]
    label = _label(multipliers)
    if isinstance(forward, dict) and forward.get("kind") == "integer":
        # Integer designs reuse names across libraries and releases: the table's fingerprint
        # tells them apart.
        fingerprint = str(forward.get("fingerprint", ""))[:12]
        label = f"{forward['name']}@{fingerprint} (quantized, grad={multipliers['grad_input']}"
        step = files.config.get("lut_step")
        label += f", lut_step={step})" if step not in (None, 1) else ")"
    return Run(files.path, files.config, multipliers, files.history, label)


def _load_dqn_run(run_dir: str | os.PathLike[str]) -> Run:
    from approxsim.replay.dqn_config import DQNError
    from approxsim.replay.runs import read_dqn_run

    try:
        files = read_dqn_run(run_dir)
        cfg, multipliers = files.config, files.multipliers
    except (DQNError, KeyError, TypeError) as exc:
        raise CompareError(f"{run_dir}: not a readable DQN run ({exc})") from None
    options = [
        f"{k}={cfg[k]}"
        for k in ("query", "bits", "levels", "k", "radius", "csp")
        if cfg.get(k) is not None
    ]
    if cfg.get("is_weights", "per") != "per":
        options.append(f"is_weights={cfg['is_weights']}")
    if multipliers["forward"] != "fp32":
        options.append(f"multiplier={multipliers['forward']}")
    label = str(cfg.get("replay")) + (f" ({', '.join(options)})" if options else "")
    return Run(files.path, cfg, multipliers, files.history, label, kind="dqn")


def _check_one_kind(runs: Sequence[Run]) -> None:
    if len({r.kind for r in runs}) > 1:
        raise CompareError(
            "cannot compare training runs with DQN runs (accuracy against return); "
            "compare each kind on its own"
        )


def number_or_none(x: Any) -> float | None:
    """``x`` as a float when it is a number (a metrics field may be missing or null)."""
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
        final accuracy, as fractions; ``None`` without a baseline), ``is_baseline`` and
        ``kind``. For DQN runs (``kind == "dqn"``) the same keys hold the return
        (``return_recent``) instead of the accuracy, steps instead of epochs (``epochs``:
        planned steps, ``epochs_completed``: the last record's step, ``best_epoch``: the
        step of the best return), ``model`` and ``dataset`` the environment, and gaps are
        differences of returns.

    Raises:
        CompareError: no runs, an unreadable run folder, or training and DQN runs mixed.
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
    _check_one_kind(runs)
    base_final = (
        number_or_none(base.history[-1].get(base.metric)) if base and base.history else None
    )
    labels = [r.label for r in runs]
    rows = []
    for run in runs:
        label = run.label
        if labels.count(label) > 1:
            label = f"{label} [{run.path.name}]"
        final = run.history[-1] if run.history else {}
        accs = [
            (a, run.position(r))
            for r in run.history
            if (a := number_or_none(r.get(run.metric))) is not None
        ]
        best_acc, best_epoch = max(accs, key=lambda t: t[0]) if accs else (None, None)
        final_acc = number_or_none(final.get(run.metric))
        rows.append(
            {
                "run": str(run.path),
                "kind": run.kind,
                "label": label,
                "model": run.config.get("model", run.config.get("env")),
                "dataset": run.config.get("dataset", run.config.get("env")),
                "multipliers": dict(run.multipliers),
                "epochs": run.planned,
                "epochs_completed": run.completed,
                "final_test_acc": final_acc,
                "best_test_acc": best_acc,
                "best_epoch": best_epoch,
                "final_train_loss": number_or_none(final.get("train_loss", final.get("loss"))),
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


def _ret(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _ret_gap(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}"


def format_comparison(result: dict[str, Any]) -> str:
    """A text table of :func:`compare_runs`' result (baseline marked with ``*``)."""
    dqn = any(r.get("kind") == "dqn" for r in result["runs"])
    value, gap = (_ret, _ret_gap) if dqn else (_pct, _pp)
    header = (
        "run",
        "replay" if dqn else "multiplier",
        "steps" if dqn else "epochs",
        "final return" if dqn else "final acc",
        "best return (step)" if dqn else "best acc (epoch)",
        "gap final",
        "gap best",
    )
    rows = [header]
    for r in result["runs"]:
        best = value(r["best_test_acc"])
        if r["best_epoch"] is not None:
            best += f" ({r['best_epoch']})"
        epochs = f"{r['epochs_completed']}/{r['epochs']}"
        rows.append(
            (
                ("* " if r["is_baseline"] else "  ") + Path(r["run"]).name,
                r["label"],
                epochs,
                value(r["final_test_acc"]),
                best,
                "baseline" if r["is_baseline"] else gap(r["gap_final"]),
                "" if r["is_baseline"] else gap(r["gap_best"]),
            )
        )
    lines = text_table(rows[0], rows[1:], left=2, rule="columns")
    if result["baseline"] is None:
        lines.append("(no baseline: pass --baseline RUN_DIR or include an fp32 run)")
    elif dqn:
        lines.append(
            "(* baseline; return = mean of the last 20 episodes; gaps are return minus the "
            "baseline's final return)"
        )
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
        "allow_nonfinite",
        "threads",
        "workers",
        "device",
        "data_dir",
        "checkpoint_every",
        "priorities_every",
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


def _group_key(run: Run, depth: int = 0) -> str:
    """What a run computes, apart from its seed: its settings and multipliers, with the run it
    was fine-tuned from (``init_from``) replaced by that run's own key — so the fine-tunings of
    seed 0, 1 and 2 of one float setup group together, and those of different setups do not."""
    settings = {k: v for k, v in run.config.items() if k not in _NOT_RESULT_SETTINGS}
    parent = settings.get("init_from")
    if parent is not None and depth < 8:
        try:
            settings["init_from"] = _group_key(load_run(parent), depth + 1)
        except CompareError:
            pass  # the starting run is gone: its path stands for it
    return json.dumps([settings, run.multipliers], sort_keys=True, default=str)


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
        dataset, or ``None``) and ``runs`` (folders). DQN runs (``kind == "dqn"``): returns
        instead of accuracies, steps instead of epochs, the environment as model and dataset,
        and ``gap_final`` relative to the first group (every DQN group may be fp32).

    Raises:
        CompareError: no runs, an unreadable run folder, or training and DQN runs mixed.
    """
    if not run_dirs:
        raise CompareError("name at least one run folder")
    groups: dict[str, list[Run]] = {}
    loaded = [load_run(d) for d in run_dirs]
    _check_one_kind(loaded)
    for run in loaded:
        groups.setdefault(_group_key(run), []).append(run)
    rows: list[dict[str, Any]] = []
    for members in groups.values():
        first = members[0]
        planned, metric = first.planned, first.metric
        done = [r for r in members if r.history and r.completed >= (planned or 0)]
        finals = [a for r in done if (a := number_or_none(r.history[-1].get(metric))) is not None]
        bests = [
            max(a for h in r.history if (a := number_or_none(h.get(metric))) is not None)
            for r in done
            if any(number_or_none(h.get(metric)) is not None for h in r.history)
        ]
        final_mean, final_std = _mean_std(finals)
        best_mean, best_std = _mean_std(bests)
        rows.append(
            {
                "kind": first.kind,
                "model": first.config.get("model", first.config.get("env")),
                "dataset": first.config.get("dataset", first.config.get("env")),
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
        )  # for DQN runs: the first group of the environment
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
    """A Markdown table of :func:`compare_seed_groups`' result (accuracies in %, returns of
    DQN runs as they are)."""
    if any(g.get("kind") == "dqn" for g in result["groups"]):
        return _format_dqn_groups(result)
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


def _format_dqn_groups(result: dict[str, Any]) -> str:
    lines = [
        "| env | replay | steps | seeds | final return | best return | gap to first group |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in result["groups"]:
        lines.append(
            f"| {g['model']} | {g['label']} | {g['epochs']} "
            f"| {g['seeds_complete']}/{len(g['seeds'])} "
            f"| {_pm_plain(g['final_mean'], g['final_std'])} "
            f"| {_pm_plain(g['best_mean'], g['best_std'])} | {_ret_gap(g['gap_final'])} |"
        )
    return "\n".join(lines)


def _pm_plain(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.1f}" + ("" if std is None else f" ± {std:.1f}")
