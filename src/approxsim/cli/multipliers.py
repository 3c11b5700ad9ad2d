"""``approxsim multipliers list | show``: list, inspect and plot multipliers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from approxsim._io import check_output
from approxsim.cli.common import (
    CLIError,
    add_multiplier_arguments,
    any_multiplier_from_args,
    multiplier_from_args,
)
from approxsim.multipliers.integer import IntMultiplier

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``approxsim multipliers`` to the top-level subparsers."""
    mult = sub.add_parser("multipliers", help="list, inspect and plot multipliers")
    msub = mult.add_subparsers(dest="action", metavar="ACTION")
    msub.required = True
    lst = msub.add_parser(
        "list",
        help="list built-in multipliers",
        description="List the built-in float multipliers, then the integer ones (with their "
        "operand type and the first 12 hex digits of their table's fingerprint).",
    )
    lst.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'mitchell*'")
    lst.add_argument(
        "--kind",
        choices=["all", "float", "int"],
        default="all",
        help="float multipliers, integer ones, or both (default)",
    )
    lst.add_argument(
        "--stats",
        action="store_true",
        help="also print error statistics (integer: EvoApproxLib's metrics)",
    )
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(handler=_cmd_list)

    show = msub.add_parser(
        "show",
        help="error statistics of one multiplier (and a heat map with --plot)",
        description="Print a multiplier's error statistics: a float one's over its mantissa "
        "grid, an integer one's (EvoApproxLib's metrics) over all operand pairs. Integer "
        "multipliers: a built-in NAME, --evoapprox FILE, or --c FILE --function F --bits B "
        "[--signed].",
    )
    add_multiplier_arguments(show, positional=True, integer=True)
    show.add_argument(
        "--plot",
        metavar="FILE.png",
        help="write a heat map (float: relative error; integer: error distance)",
    )
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
    from approxsim.multipliers.registry import get_int_multiplier, list_int_multipliers

    names = list_multipliers(args.pattern) if args.kind != "int" else []
    int_names = list_int_multipliers(args.pattern) if args.kind != "float" else []
    if not names and not int_names:
        raise CLIError(f"no multiplier matches {args.pattern!r}; try `approxsim multipliers list`")
    ints = [get_int_multiplier(n) for n in int_names]
    if args.json:
        out: list[dict[str, Any]] = []
        for n in names:
            m = get_multiplier(n)
            item = {"name": n, "kind": "float", "mantissa_bits": m.mantissa_bits}
            item["exact"] = m.is_exact
            if args.stats:
                item["error_stats"] = m.error_stats()
            out.append(item)
        for im in ints:
            info = im.describe()
            del info["provenance"], info["error_stats"]
            if args.stats:
                info["error_stats"] = im.error_stats()
            out.append(info)
        print(json.dumps(out, indent=1))
        return 0
    if args.stats:
        if names:
            print(_stats_table([(n, get_multiplier(n).error_stats()) for n in names]))
            print("(relative error over the mantissa grid, vs the exact product of grid operands)")
        if ints:
            print("\n" if names else "", end="")
            print("\n".join(_int_stats_table(ints)))
            print("(integer: EvoApproxLib's metrics over all operand pairs)")
        return 0
    for n in names:
        m = get_multiplier(n)
        desc = m.provenance.get("description", "")
        bits = "exact" if m.is_exact else f"M={m.mantissa_bits}"
        print(f"{n:<12} {bits:<6} {desc}")
    for im in ints:
        desc = im.provenance.get("description", "")
        print(f"{im.name:<12} {_int_type(im):<6} {im.fingerprint[:12]}  {desc}")
    return 0


def _int_type(m: IntMultiplier) -> str:
    return f"{'s' if m.signed else 'u'}{m.bits}"


#: EvoApproxLib's metrics as ``(column, error_stats key, format)``.
_INT_METRICS = (
    ("MAE%", "mae_percent", "{:.4f}"),
    ("MAE", "mae", "{:.6g}"),
    ("WCE%", "wce_percent", "{:.4f}"),
    ("WCE", "wce", "{:.0f}"),
    ("WCRE%", "wcre_percent", "{:.2f}"),
    ("EP%", "ep_percent", "{:.2f}"),
    ("MRE%", "mre_percent", "{:.3f}"),
    ("MSE", "mse", "{:.6g}"),
    ("bias", "mean_error", "{:+.4g}"),
    ("std", "std_error", "{:.4g}"),
)


def _int_stats_table(mults: list[IntMultiplier]) -> list[str]:
    from approxsim._text import text_table

    rows = []
    for m in mults:
        st = m.error_stats()
        rows.append(
            [m.name, _int_type(m), m.fingerprint[:12]]
            + [fmt.format(st[key]) for _, key, fmt in _INT_METRICS]
        )
    header = ["multiplier", "type", "fingerprint"] + [c for c, _, _ in _INT_METRICS]
    return text_table(header, rows, left=3)


def _check_show_outputs(args: argparse.Namespace) -> None:
    """Refuse ``--save`` / ``--plot`` files that may not be written, before the multiplier
    is built (a C model compiles and runs first)."""
    inputs = (args.c, args.approxtrain_lut, args.lut, args.evoapprox)
    if args.save:
        check_output(args.save, overwrite=args.overwrite, inputs=inputs)
    if args.plot:
        from approxsim.plots.common import check_figure_path

        check_figure_path(args.plot, overwrite=args.overwrite, inputs=inputs)
    if args.save and args.plot and Path(args.save).resolve() == Path(args.plot).resolve():
        raise CLIError(f"--save and --plot both name {args.plot}; name two files")


def _cmd_show(args: argparse.Namespace) -> int:
    _check_show_outputs(args)
    mult = any_multiplier_from_args(args, float_multiplier=multiplier_from_args)
    if isinstance(mult, IntMultiplier):
        return _show_int(args, mult)
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


def _show_int(args: argparse.Namespace, mult: IntMultiplier) -> int:
    """``multipliers show`` of an integer multiplier: metrics, header check, fingerprint."""
    info = mult.describe()
    inputs = (args.c, args.lut, args.evoapprox)
    if args.save:
        info["saved_to"] = str(mult.save(Path(args.save), overwrite=args.overwrite, inputs=inputs))
    if args.plot:
        from approxsim.plots.multipliers import plot_int_error_heatmap

        info["plot"] = str(
            plot_int_error_heatmap(mult, Path(args.plot), overwrite=args.overwrite, inputs=inputs)
        )
    if args.json:
        print(json.dumps(info, indent=1, sort_keys=True))
        return 0
    prov = info["provenance"]
    kind = "signed (two's complement)" if mult.signed else "unsigned"
    print(f"multiplier   {mult.name}")
    print(f"operands     {mult.bits}-bit {kind}, {mult.min_value}..{mult.max_value}")
    desc = prov.get("description") or prov.get("function") or ""
    print(f"builder      {prov.get('builder')}" + (f" ({desc})" if desc else ""))
    print(f"fingerprint  {mult.fingerprint}")
    pairs = 1 << (2 * mult.bits)
    print(f"error over all {pairs} operand pairs (EvoApproxLib's metrics, d = approx - exact):")
    st = info["error_stats"]
    for column, key, fmt in _INT_METRICS:
        print(f"  {column:<8}{fmt.format(st[key]):>14}")
    evo = prov.get("evoapprox")
    if evo:
        print(f"header       {evo['signature']}")
        for key, rec in evo["metrics"].items():
            print(
                f"  {key:<8}{rec['printed']:>14} printed, {rec['computed']:.6g} computed: "
                f"{rec['status']}"
            )
        for key, rec in evo["circuit"].items():
            print(f"  {key:<12}{rec['printed']:>10} {rec['unit']}")
    if args.save:
        print(f"saved        {info['saved_to']}")
    if args.plot:
        print(f"plot         {info['plot']}")
    return 0
