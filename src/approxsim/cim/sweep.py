"""Accuracy versus variation magnitude: Monte Carlo and worst case for several models.

For every model (e.g. one per training method) and every bound ``ε``, :func:`run_sweep`
records

* the Monte Carlo accuracy of ``mc_samples`` chips with device variation ``σ = ε_d`` (the
  per-device value of ``ε``: each device's typical deviation equals the bound) on the
  held-out split — its mean and 1st / 5th percentiles with intervals; with
  ``mc_bounded=True`` the chips are write-verified to ``|Δg| ≤ ε_d``, so every Monte Carlo
  chip lies inside the box the search explores;
* the worst case found by each search method (default ``"auto"``) in the box
  ``|Δg| ≤ ε_d`` (per-weight ``|Δw| ≤ ε_w · s``; with a clipping device model the device box
  ``[-ε_d, ε_d] ∩ [-g, 1 - g]``), searched on the attack split and scored on both splits,
  with the run that found it and what the search cost.

**Monotonicity in ε.** A chip within a bound ε is within every larger bound, so the true
worst-case accuracy cannot rise with ε. Points are checked against the worst chip found at
the next smaller ε of the same model: when a search at the larger ε found a weaker worst case
(it "broke monotonicity"), the smaller-ε chip is scored in its place (it is feasible there)
and the point records ``"monotonicity": {"broken": true, ...}``; :func:`monotonicity_breaks`
lists the breaks a sweep document still shows (e.g. pieces computed before a resume, whose
chips are not kept).

The results are one JSON document (schema ``approxsim.cim.sweep/1``), rewritten after every
completed piece, so an interrupted sweep keeps its results and ``previous=`` continues it.
:func:`approxsim.plots.cim.plot_sweep` draws it (also importable from here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from approxsim._runtime import ProgressFactory, ProgressLike
from approxsim._text import text_table
from approxsim.cim.chip import PatternArg, Perturbation, chip
from approxsim.cim.device import CIMError, DeviceConfig, per_device_bound, per_weight_bound
from approxsim.cim.evaluation import DataLike, accuracy, num_samples
from approxsim.cim.montecarlo import monte_carlo
from approxsim.cim.search import SEARCH_METHODS, SearchConfig, worst_case_search

# The figure is drawn in approxsim.plots; importable from here as before.
from approxsim.plots.cim import plot_sweep

__all__ = ["SWEEP_SCHEMA", "run_sweep", "plot_sweep", "sweep_table", "monotonicity_breaks"]

SWEEP_SCHEMA = "approxsim.cim.sweep/1"


def _settings(
    config: DeviceConfig,
    eps_values: Sequence[float],
    unit: str,
    mc_samples: int,
    mc_bounded: bool,
    seed: int,
    search: SearchConfig,
    methods: Sequence[str],
    data: dict[str, Any],
) -> dict[str, Any]:
    return {
        "schema": SWEEP_SCHEMA,
        "device": config.replace(sigma=0.0, read_noise=0.0).to_dict(),
        "unit": unit,
        "eps": [float(e) for e in eps_values],
        "monte_carlo": {
            "samples": mc_samples,
            "seed": seed,
            "sigma": "equal to the per-device bound eps_device at each point",
            "bounded": mc_bounded,
            "split": "heldout",
        },
        "search": {k: v for k, v in search.to_dict().items() if k not in ("eps", "unit", "method")},
        "methods": list(methods),
        "data": data,
    }


def run_sweep(
    models: Sequence[tuple[str, nn.Module]],
    attack_data: DataLike,
    heldout_data: DataLike,
    eps_values: Sequence[float],
    *,
    config: DeviceConfig | None = None,
    unit: str = "weight",
    mc_samples: int = 50,
    mc_bounded: bool = False,
    seed: int = 0,
    search: SearchConfig | None = None,
    methods: Sequence[str] = ("auto",),
    include: PatternArg = None,
    exclude: PatternArg = None,
    batch_size: int = 1000,
    data_info: dict[str, Any] | None = None,
    model_info: dict[str, dict[str, Any]] | None = None,
    previous: dict[str, Any] | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Monte Carlo and worst case at each ``ε`` for each model.

    Args:
        models: ``(label, model)`` pairs, e.g. ``[("standard", m1), ("noise", m2)]``.
        attack_data: Split the worst-case searches optimize on.
        heldout_data: Split the Monte Carlo chips and the found perturbations are scored on.
        eps_values: Bounds, in ``unit``.
        config: Device model (bits, mapping, ``clip``); default ``DeviceConfig()``. With
            ``clip`` the Monte Carlo chips are clipped and the searches run in device space.
        unit: ``"weight"`` (fraction of the layer's ``max|w|``) or ``"device"``.
        mc_samples: Chips per point.
        mc_bounded: Write-verify the Monte Carlo chips to the bound.
        seed: Seed of the Monte Carlo chips and the searches.
        search: Search settings (``eps``, ``unit``, ``method`` are set per point); default
            ``SearchConfig(eps=1)`` with its defaults otherwise.
        methods: Search methods to run (``"auto"``, ``"pgd"``, ``"cw"``).
        include: Layers to map.
        exclude: Layers to keep digital.
        batch_size: Scoring batch size.
        data_info: Description of the splits, stored in the result.
        model_info: Extra fields per model label (checkpoint path, method), stored.
        previous: The result of an interrupted sweep with the same settings; finished
            pieces are kept and not recomputed.
        on_update: Called with the whole result after every finished piece (to save it).
        progress: ``progress(description, total_images)`` returns a bar with
            ``update(n)`` / ``close()``, or ``None``.

    Returns:
        The result document (see the module docstring).

    Raises:
        CIMError: invalid settings, or ``previous`` made with other settings.
        KeyboardInterrupt: Ctrl-C; every piece finished before it was passed to
            ``on_update``.
    """
    config = config or DeviceConfig()
    _check_arguments(config, unit, eps_values, methods, [label for label, _ in models])
    search = search or SearchConfig(eps=1.0)
    for method in methods:  # a budget too small for a method's runs: refused before any work
        dataclasses.replace(search, method=method).components()
    data = dict(data_info or {})
    data.setdefault("attack_samples", num_samples(attack_data))
    data.setdefault("heldout_samples", num_samples(heldout_data))
    settings = _settings(
        config, eps_values, unit, mc_samples, mc_bounded, seed, search, methods, data
    )
    doc: dict[str, Any] = dict(settings)
    doc["models"] = []
    old_models = _previous_models(previous, settings)
    run = _SweepRun(
        doc,
        attack_data,
        heldout_data,
        config,
        unit,
        mc_samples,
        mc_bounded,
        seed,
        search,
        methods,
        include,
        exclude,
        batch_size,
        on_update,
        progress,
    )
    for label, model in models:
        old = old_models.get(label, {})
        entry: dict[str, Any] = {"label": label, **(model_info or {}).get(label, {})}
        entry["clean"] = old.get("clean")
        old_points = {p["eps"]: p for p in old.get("points", [])}
        entry["points"] = []
        doc["models"].append(entry)
        if entry["clean"] is None:
            entry["clean"] = run.clean(model)
            run.save()
        points = {}
        for eps in eps_values:
            # Every point names its ε from the start: a document saved before the point is
            # reached still reads as a sweep (and can be continued).
            point: dict[str, Any] = {"eps": float(eps), **old_points.get(float(eps), {})}
            entry["points"].append(point)
            points[float(eps)] = point
        # Smallest ε first, so each point can be checked against the chip of the one below.
        carried: tuple[float, Perturbation] | None = None
        for eps in sorted(points):
            carried = run.point(label, model, eps, points[eps], carried)
    return doc


def _check_arguments(
    config: DeviceConfig,
    unit: str,
    eps_values: Sequence[float],
    methods: Sequence[str],
    labels: list[str],
) -> None:
    """Refuse invalid sweep settings before any work starts."""
    if unit not in ("weight", "device"):
        raise CIMError(f"unit must be 'weight' or 'device', got {unit!r}")
    if not eps_values or not all(
        isinstance(e, (int, float)) and math.isfinite(e) and e > 0 for e in eps_values
    ):
        raise CIMError(f"eps values must be positive numbers, got {list(eps_values)!r}")
    bad = [m for m in methods if m not in SEARCH_METHODS]
    if bad or not methods:
        raise CIMError(f"methods must be among {SEARCH_METHODS}, got {list(methods)!r}")
    if len(set(labels)) != len(labels) or not labels:
        raise CIMError(f"model labels must be distinct and at least one, got {labels}")


def _previous_models(
    previous: dict[str, Any] | None, settings: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The models of an interrupted sweep by label, checked to have the same settings."""
    if previous is None:
        return {}
    diffs = [k for k in settings if k != "eps" and previous.get(k) != settings[k]]
    if diffs:
        raise CIMError(
            f"cannot continue the sweep: its settings differ in {diffs}; use another "
            "output folder or the same settings"
        )
    models = previous.get("models", [])
    ok = isinstance(models, list) and all(
        isinstance(m, dict)
        and isinstance(m.get("label"), str)
        and isinstance(m.get("points", []), list)
        and all(
            isinstance(p, dict) and isinstance(p.get("eps"), (int, float))
            for p in m.get("points", [])
        )
        and (m.get("clean") is None or isinstance(m.get("clean"), dict))
        for m in models
    )
    if not ok:
        raise CIMError(
            "cannot continue the sweep: its result file does not hold a sweep's models and "
            "points (it was altered); use another output folder"
        )
    return {m["label"]: m for m in models}


@dataclass
class _SweepRun:
    """The settings one sweep shares between its pieces, and how a piece is computed."""

    doc: dict[str, Any]
    attack_data: DataLike
    heldout_data: DataLike
    config: DeviceConfig
    unit: str
    mc_samples: int
    mc_bounded: bool
    seed: int
    search: SearchConfig
    methods: Sequence[str]
    include: PatternArg
    exclude: PatternArg
    batch_size: int
    on_update: Callable[[dict[str, Any]], None] | None
    progress: ProgressFactory | None

    def save(self) -> None:
        """Hand the document, as it is now, to ``on_update``."""
        if self.on_update is not None:
            self.on_update(self.doc)

    @contextlib.contextmanager
    def bar(self, desc: str, total: int) -> Iterator[ProgressLike | None]:
        """A progress report for one piece (closed when the piece ends), or ``None``."""
        b = self.progress(desc, total) if self.progress is not None else None
        try:
            yield b
        finally:
            if b is not None:
                b.close()

    def clean(self, model: nn.Module) -> dict[str, float]:
        """Float accuracy and the nominal chip's accuracy on both splits."""
        float_acc = accuracy(model, self.heldout_data, batch_size=self.batch_size)
        with chip(model, config=self.config, include=self.include, exclude=self.exclude) as h:
            chip_held = accuracy(model, self.heldout_data, batch_size=self.batch_size)
            chip_att = accuracy(model, self.attack_data, batch_size=self.batch_size)
            h.check_called()
        return {"float_heldout": float_acc, "chip_heldout": chip_held, "chip_attack": chip_att}

    def point(
        self,
        label: str,
        model: nn.Module,
        eps: float,
        point: dict[str, Any],
        carried: tuple[float, Perturbation] | None,
    ) -> tuple[float, Perturbation] | None:
        """Complete one ``(model, ε)`` point in place (keeping the pieces it already has).

        Args:
            label: The model's label.
            model: The model.
            eps: The bound.
            point: The point's dict (filled in).
            carried: ``(ε', chip)``: the worst chip found at the next smaller bound ``ε'``
                in this run (``None``: none).

        Returns:
            ``(ε, chip)`` of this point's worst chip for the next point, or ``None`` when
            its searches were not run here (resumed) and no chip was carried.
        """
        eps_d = eps if self.unit == "device" else per_device_bound(eps, self.config)
        eps_w = eps if self.unit == "weight" else per_weight_bound(eps, self.config)
        point.update(eps=eps, eps_weight=eps_w, eps_device=eps_d, sigma=eps_d)
        if "monte_carlo" not in point:
            point["monte_carlo"] = self.monte_carlo(label, model, eps, eps_d)
            self.save()
        worst = point.setdefault("worst", {})
        chips: dict[str, tuple[float, Perturbation]] = {}
        for method in self.methods:
            if method not in worst:
                worst[method], pert = self.worst_case(label, model, eps, method)
                chips[method] = (worst[method]["attack_accuracy"], pert)
                self.save()
        done = [worst[m] for m in self.methods if m in worst]
        point["worst_attack"] = min(w["attack_accuracy"] for w in done)
        point["worst_heldout"] = min(w["heldout_accuracy"] for w in done)
        best = (eps, min(chips.values(), key=lambda c: c[0])[1]) if chips else None
        if carried is not None and "monotonicity" not in point:
            point["monotonicity"] = self.check_carried(model, point, carried)
            if point["monotonicity"]["broken"]:
                best = (eps, carried[1])
        self.save()
        return best if best is not None else carried

    def check_carried(
        self, model: nn.Module, point: dict[str, Any], carried: tuple[float, Perturbation]
    ) -> dict[str, Any]:
        """Score the smaller bound's worst chip (feasible at this bound); where it is worse
        on the attack split than this point's searches, it becomes the point's worst case."""
        eps_small, pert = carried
        with chip(model, pert, include=self.include, exclude=self.exclude):
            att = accuracy(model, self.attack_data, batch_size=self.batch_size)
            held = accuracy(model, self.heldout_data, batch_size=self.batch_size)
        broken = att < point["worst_attack"]
        out: dict[str, Any] = {
            "broken": broken,
            "checked_against_eps": eps_small,
            "smaller_eps_chip_attack": att,
            "smaller_eps_chip_heldout": held,
        }
        if broken:
            out["searched_attack"] = point["worst_attack"]
            out["searched_heldout"] = point["worst_heldout"]
            point["worst_attack"], point["worst_heldout"] = att, held
        return out

    def monte_carlo(self, label: str, model: nn.Module, eps: float, eps_d: float) -> dict[str, Any]:
        """The Monte Carlo piece of a point: chips with ``σ = ε_d`` on the held-out split."""
        mc_cfg = self.config.replace(
            sigma=eps_d,
            write_verify_tolerance=eps_d if self.mc_bounded else None,
            write_verify_slices=None,
        )
        total = self.mc_samples * num_samples(self.heldout_data)
        with self.bar(f"{label} eps={eps:g} monte carlo", total) as b:
            mc = monte_carlo(
                model,
                self.heldout_data,
                mc_cfg,
                samples=self.mc_samples,
                seed=self.seed,
                include=self.include,
                exclude=self.exclude,
                batch_size=self.batch_size,
                progress=b,
            )
        return {**mc.summary, "accuracies": mc.accuracies, "seconds": round(mc.seconds, 3)}

    def worst_case(
        self, label: str, model: nn.Module, eps: float, method: str
    ) -> tuple[dict[str, Any], Perturbation]:
        """The worst-case piece of a point for one search method, and its chip."""
        scfg = dataclasses.replace(self.search, eps=eps, unit=self.unit, method=method)
        total = scfg.total_budget * scfg.batch_size
        with self.bar(f"{label} eps={eps:g} {method}", total) as b:
            res = worst_case_search(
                model,
                self.attack_data,
                self.config,
                scfg,
                heldout_data=self.heldout_data,
                include=self.include,
                exclude=self.exclude,
                eval_batch_size=self.batch_size,
                progress=b,
            )
        if res.interrupted:
            raise KeyboardInterrupt
        piece = {
            "attack_accuracy": res.attack_accuracy,
            "heldout_accuracy": res.heldout_accuracy,
            "found_by": res.found_by,
            "space": res.space,
            "runs": res.runs,
            "restart_accuracies": res.restart_accuracies,
            "cost": res.cost,
            "perturbation_stats": res.stats,
            "seconds": round(res.seconds, 3),
        }
        return piece, res.perturbation


def monotonicity_breaks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Where a sweep's worst case rises with ε: a search at a larger bound found a weaker
    chip than one at a smaller bound (whose chip is feasible at the larger one).

    Args:
        doc: A :func:`run_sweep` result.

    Returns:
        One dict per pair of consecutive bounds of a model whose attack-split worst case
        rises (``model``, ``eps_small``, ``eps_large``, ``attack_small``,
        ``attack_large``), plus the breaks the sweep repaired (``"repaired": True``).
    """
    out = []
    for m in doc.get("models", []):
        pts = sorted(
            (p for p in m.get("points", []) if "worst_attack" in p), key=lambda p: p["eps"]
        )
        for a, b in zip(pts, pts[1:], strict=False):
            mono = b.get("monotonicity") or {}
            if mono.get("broken"):
                out.append(
                    {
                        "model": m["label"],
                        "eps_small": a["eps"],
                        "eps_large": b["eps"],
                        "attack_small": mono["smaller_eps_chip_attack"],
                        "attack_large": mono["searched_attack"],
                        "repaired": True,
                    }
                )
            elif b["worst_attack"] > a["worst_attack"]:
                out.append(
                    {
                        "model": m["label"],
                        "eps_small": a["eps"],
                        "eps_large": b["eps"],
                        "attack_small": a["worst_attack"],
                        "attack_large": b["worst_attack"],
                        "repaired": False,
                    }
                )
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def sweep_table(doc: dict[str, Any], *, markdown: bool = True) -> str:
    """The sweep as a table: per model and ``ε``, clean, Monte Carlo mean / p1 / p5 and the
    worst case on the held-out and the attack split (accuracies in %).

    Args:
        doc: A :func:`run_sweep` result (or the JSON file's contents).
        markdown: A Markdown table; else aligned plain text.
    """
    unit = doc.get("unit", "weight")
    head = [
        "model",
        f"ε ({unit})",
        "clean chip",
        "MC mean [95% CI]",
        "MC p1 [CI]",
        "MC p5",
        "worst held-out",
        "worst attack split",
    ]
    rows = []
    for m in doc.get("models", []):
        clean = (m.get("clean") or {}).get("chip_heldout")
        for p in m.get("points", []):
            mc = p.get("monte_carlo") or {}
            ci = mc.get("mean_ci") or [None, None]
            p1ci = mc.get("p1_ci") or [None, None]
            rows.append(
                [
                    m["label"],
                    f"{p['eps']:g}",
                    _pct(clean),
                    f"{_pct(mc.get('mean'))} [{_pct(ci[0])}, {_pct(ci[1])}]" if mc else "–",
                    f"{_pct(mc.get('p1'))} [{_pct(p1ci[0])}, {_pct(p1ci[1])}]" if mc else "–",
                    _pct(mc.get("p5")),
                    _pct(p.get("worst_heldout")),
                    _pct(p.get("worst_attack")),
                ]
            )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    cells = [[str(c) for c in r] for r in rows]
    return "\n".join(text_table([str(c) for c in head], cells, left=len(head), rule=None))
