"""``approxsim multipliers list | show``: list, inspect and plot multipliers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from approxsim._io import check_output
from approxsim.cli.common import CLIError, add_multiplier_arguments, multiplier_from_args

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``approxsim multipliers`` to the top-level subparsers."""
    mult = sub.add_parser("multipliers", help="list, inspect and plot multipliers")
    msub = mult.add_subparsers(dest="action", metavar="ACTION")
    msub.required = True
    lst = msub.add_parser("list", help="list built-in multipliers")
    lst.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'mitchell*'")
    lst.add_argument("--stats", action="store_true", help="also print error statistics")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(handler=_cmd_list)

    show = msub.add_parser(
        "show",
        help="error statistics of one multiplier (and a heat map with --plot)",
        description="Print a multiplier's error statistics over its mantissa grid.",
    )
    add_multiplier_arguments(show, positional=True)
    show.add_argument("--plot", metavar="FILE.png", help="write a relative-error heat map")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.add_argument("--save", metavar="FILE.npz", help="save the multiplier for later runs")
    show.add_argument(
        "--overwrite", action="store_true", help="replace --save / --plot FILE if it exists"
    )
    show.set_defaults(handler=_cmd_show)


def _pct(x: float, signed: bool = True) -> str:
    return f"{100 * x:+.4f}%" if signed else f"{100 * x:.4f}%"


_UNSIGNED = ("mean_abs_rel_error", "max_abs_rel_error", "std_rel_error")


def _stats_table(rows: list[tuple[str, dict[str, float]]]) -> str:
    cols = [
        ("mean", "mean_rel_error"),
        ("mean |.|", "mean_abs_rel_error"),
        ("max |.|", "max_abs_rel_error"),
        ("std", "std_rel_error"),
    ]
    name_w = max([len("multiplier")] + [len(n) for n, _ in rows])
    header = f"{'multiplier':<{name_w}}  " + "  ".join(f"{c:>11}" for c, _ in cols)
    lines = [header, "-" * len(header)]
    for name, st in rows:
        lines.append(
            f"{name:<{name_w}}  "
            + "  ".join(f"{_pct(st[k], signed=k not in _UNSIGNED):>11}" for _, k in cols)
        )
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    from approxsim.multipliers import get_multiplier, list_multipliers

    names = list_multipliers(args.pattern)
    if not names:
        raise CLIError(f"no multiplier matches {args.pattern!r}; try `approxsim multipliers list`")
    if args.json:
        out = []
        for n in names:
            m = get_multiplier(n)
            item = {"name": n, "mantissa_bits": m.mantissa_bits, "exact": m.is_exact}
            if args.stats:
                item["error_stats"] = m.error_stats()
            out.append(item)
        print(json.dumps(out, indent=1))
        return 0
    if args.stats:
        print(_stats_table([(n, get_multiplier(n).error_stats()) for n in names]))
        print("(relative error over the mantissa grid, vs the exact product of grid operands)")
    else:
        for n in names:
            m = get_multiplier(n)
            desc = m.provenance.get("description", "")
            bits = "exact" if m.is_exact else f"M={m.mantissa_bits}"
            print(f"{n:<12} {bits:<6} {desc}")
    return 0


def _check_show_outputs(args: argparse.Namespace) -> None:
    """Refuse ``--save`` / ``--plot`` files that may not be written, before the multiplier
    is built (a C model compiles and runs first)."""
    inputs = (args.c, args.approxtrain_lut, args.lut)
    if args.save:
        check_output(args.save, overwrite=args.overwrite, inputs=inputs)
    if args.plot:
        from approxsim.plots.common import check_figure_path

        check_figure_path(args.plot, overwrite=args.overwrite, inputs=inputs)
    if args.save and args.plot and Path(args.save).resolve() == Path(args.plot).resolve():
        raise CLIError(f"--save and --plot both name {args.plot}; name two files")


def _cmd_show(args: argparse.Namespace) -> int:
    _check_show_outputs(args)
    mult = multiplier_from_args(args)
    info = mult.describe()
    inputs = (args.c, args.approxtrain_lut, args.lut)
    if args.save:
        info["saved_to"] = str(mult.save(Path(args.save), overwrite=args.overwrite, inputs=inputs))
    if args.plot:
        from approxsim.plots.multipliers import plot_error_heatmap

        info["plot"] = str(
            plot_error_heatmap(mult, Path(args.plot), overwrite=args.overwrite, inputs=inputs)
        )
    if args.json:
        print(json.dumps(info, indent=1, sort_keys=True))
        return 0
    st = info["error_stats"]
    print(f"multiplier   {mult.name}")
    if mult.is_exact:
        print("arithmetic   IEEE float32 (exact; runs natively)")
    else:
        print(f"mantissa     M={mult.mantissa_bits} bits, inputs {mult.rounding}d")
        prov = info["provenance"]
        print(
            f"builder      {prov.get('builder')}"
            + (f" ({prov['description']})" if prov.get("description") else "")
        )
        dec = prov.get("decomposability")
        if dec:
            print(
                f"check        {dec['mismatches']} mismatches in {dec['samples']} random pairs"
                + (" (ACCEPTED)" if dec["mismatches"] else " (bit-exact)")
            )
    print(f"fingerprint  {mult.fingerprint[:16]}")
    print("relative error over the mantissa grid (vs exact product of grid operands):")
    for key, label in (
        ("mean_rel_error", "mean (bias)"),
        ("mean_abs_rel_error", "mean |error|"),
        ("max_abs_rel_error", "max |error|"),
        ("min_rel_error", "min"),
        ("max_rel_error", "max"),
        ("std_rel_error", "std"),
    ):
        print(f"  {label:<13}{_pct(st[key], signed=key not in _UNSIGNED)}")
    if args.save:
        print(f"saved        {info['saved_to']}")
    if args.plot:
        print(f"plot         {info['plot']}")
    return 0
