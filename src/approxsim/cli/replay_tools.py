"""``approxsim replay fidelity`` and ``approxsim replay bench``: the sampler tools of the
``approxsim replay`` group.

Subcommands::

    approxsim replay fidelity [--vectors half-normal exponential log-normal] [--priorities FILE]
                              [--n 4096] [--bits 4 5 6 7 8] [--draws M] --out DIR
    approxsim replay bench    [--sizes 10 12 ...] [--batches 32 64 128 256] [--device cpu]
                              --out FILE.json

The group module that owns ``approxsim replay`` calls :func:`add_commands` with its
subparsers. Library work lives in :mod:`approxsim.replay.fidelity` and
:mod:`approxsim.replay.bench`; this module parses, checks outputs up front and writes files.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

from approxsim.cli.common import CLIError, finite_float, int_at_least

__all__ = ["add_commands", "run_fidelity", "run_bench"]

_pos_int = int_at_least(1)
_nonneg_float = finite_float(positive=False)


def add_commands(subparsers: Any) -> None:
    """Add ``fidelity`` and ``bench`` to the ``approxsim replay`` subparsers.

    Args:
        subparsers: What ``replay_parser.add_subparsers(...)`` returned.
    """
    _add_fidelity(subparsers)
    _add_bench(subparsers)


def _add_fidelity(sub: Any) -> None:
    p = sub.add_parser(
        "fidelity",
        help="how far each sampler's distribution is from exact PER (TV table and plot)",
        description="Per-draw distribution of every sampler on fixed priority vectors, computed "
        "analytically: total-variation distance to exact PER, mass on the top 1% / 10%, "
        "share never sampled in M draws, effective exponent. Writes fidelity.md, .csv, "
        ".json and fidelity.png to --out.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    p.add_argument(
        "--vectors",
        nargs="+",
        default=None,
        metavar="NAME",
        help="synthetic TD-error vectors: half-normal exponential log-normal (all)",
    )
    p.add_argument(
        "--priorities",
        action="append",
        default=[],
        metavar="FILE",
        help="a .pt (1-D tensor) or .npy file of TD errors, e.g. RUN/priorities/step<N>.pt "
        "(repeatable)",
    )
    p.add_argument("--n", type=_pos_int, default=4096, help="entries per synthetic vector (4096)")
    p.add_argument("--bits", type=_pos_int, nargs="+", default=[4, 5, 6, 7, 8], help="b (4..8)")
    p.add_argument("--alpha", type=_nonneg_float, default=0.6, help="priority exponent (0.6)")
    p.add_argument("--k", type=_pos_int, default=32, help="k of amper-knn (32)")
    p.add_argument("--radius", type=int, default=1, help="radius of amper-fr in levels (1)")
    p.add_argument("--levels", choices=["linear", "log"], nargs="+", default=["linear", "log"])
    p.add_argument("--draws", type=_pos_int, default=100_000, help="M for 'never sampled' (1e5)")
    p.add_argument(
        "--mc-draws",
        type=int,
        default=0,
        metavar="M",
        help="also check the analytic distributions by M Monte Carlo draws each (0: off)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic vectors (0)")
    p.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.set_defaults(handler=run_fidelity)


def _add_bench(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="sample and update time of every sampler for N = 2^10..2^20",
        description="Time sample() and update() of each sampler for buffer sizes N = 2^s and "
        "batch sizes B; records the machine and the cost counts of a batch.",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="result JSON (and FILE.md)")
    p.add_argument(
        "--sizes", type=_pos_int, nargs="+", default=[10, 12, 14, 16, 18, 20], help="log2 N"
    )
    p.add_argument("--batches", type=_pos_int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--samplers", nargs="+", default=None, metavar="NAME", help="(all)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--repeats", type=_pos_int, default=20, help="timed calls per cell (20)")
    p.add_argument("--threads", type=_pos_int, metavar="N", help="CPU threads")
    p.add_argument("--overwrite", action="store_true", help="replace --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.set_defaults(handler=run_bench)


def _check_fidelity_args(args: argparse.Namespace) -> None:
    bad = [b for b in args.bits if not 4 <= b <= 8]
    if bad:
        raise CLIError(f"--bits must lie in 4..8, got {bad[0]}")
    if args.radius < 0:
        raise CLIError(f"--radius must be >= 0 levels, got {args.radius}")
    if args.mc_draws < 0:
        raise CLIError(f"--mc-draws must be >= 0, got {args.mc_draws}")


def _fidelity_outputs(args: argparse.Namespace) -> dict[str, Path]:
    """The files of ``fidelity --out DIR``, checked before any work."""
    from approxsim._io import check_output
    from approxsim.plots.common import check_figure_path

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {args.out} is a file; name a folder")
    inputs = list(args.priorities)
    paths = {ext: out / f"fidelity.{ext}" for ext in ("md", "csv", "json")}
    for path in paths.values():
        check_output(path, overwrite=args.overwrite, inputs=inputs)
    paths["png"] = check_figure_path(out / "fidelity.png", overwrite=args.overwrite, inputs=inputs)
    return paths


def run_fidelity(args: argparse.Namespace) -> int:
    """Run ``approxsim replay fidelity``: the fidelity table of every sampler, written as
    Markdown, CSV, JSON and a figure.

    Args:
        args: The parsed command line.

    Returns:
        The exit status (0).

    Raises:
        CLIError: a bad option.
        FidelityError: an unreadable priority file or an unknown vector.
        OutputExistsError: an output exists (without ``--overwrite``).
    """
    from approxsim._io import atomic_write_json, atomic_write_text
    from approxsim._runtime import Progress, say, utc_now
    from approxsim.plots.replay_samplers import plot_fidelity
    from approxsim.replay.fidelity import (
        SYNTHETIC_VECTORS,
        am_configs,
        fidelity_table,
        load_td_errors,
        synthetic_td_errors,
    )

    _check_fidelity_args(args)
    paths = _fidelity_outputs(args)
    kinds = (
        args.vectors
        if args.vectors is not None
        else ([] if args.priorities else list(SYNTHETIC_VECTORS))
    )
    vectors = {k: synthetic_td_errors(k, args.n, seed=args.seed) for k in kinds}
    for file in args.priorities:
        # Snapshots of different runs share names (step<N>.pt): label those by their path.
        label = Path(file).name if Path(file).name not in vectors else str(file)
        vectors[label] = load_td_errors(file)
    configs = am_configs(args.bits, args.levels, k=args.k, radius=args.radius)
    bar = Progress(len(vectors) * (len(configs) + 2), "fidelity", not args.no_progress, "row")
    try:
        rows = fidelity_table(
            vectors,
            configs,
            alpha=args.alpha,
            draws=args.draws,
            mc_draws=args.mc_draws,
            progress=bar.update,
        )
    finally:
        bar.close()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    meta = {
        "alpha": args.alpha,
        "draws": args.draws,
        "k": args.k,
        "radius": args.radius,
        "n": args.n,
        "seed": args.seed,
        "date": utc_now(),
    }
    ow = args.overwrite
    atomic_write_json(paths["json"], {**meta, "rows": rows}, indent=1, overwrite=ow)
    atomic_write_text(paths["csv"], _csv(rows), overwrite=ow)
    atomic_write_text(paths["md"], fidelity_markdown(rows, meta), overwrite=ow)
    plot_fidelity(rows, paths["png"], overwrite=ow)
    print(fidelity_markdown(rows, meta))
    say(not args.no_progress, f"wrote {', '.join(p.name for p in paths.values())} to {args.out}")
    return 0


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def fidelity_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The fidelity report: per vector, TV to exact PER by bits, then the other measures at
    the largest bits.

    Args:
        rows: What :func:`approxsim.replay.fidelity.fidelity_table` returns.
        meta: ``alpha``, ``draws``, ``k``, ``radius`` of the run.

    Returns:
        Markdown text.
    """
    lines = [
        f"# Replay sampler fidelity (alpha {meta['alpha']}, knn k {meta['k']}, radius "
        f"{meta['radius']}, never-sampled share over M = {meta['draws']} draws)",
        "",
    ]
    for vector in dict.fromkeys(r["vector"] for r in rows):
        mine = [r for r in rows if r["vector"] == vector]
        bits = sorted({int(r["bits"]) for r in mine if r["bits"] != ""})
        lines += [f"## {vector} (N = {mine[0]['n']})", "", "TV distance to exact PER:", ""]
        lines += ["| sampler | query | levels | " + " | ".join(f"b={b}" for b in bits) + " |"]
        lines += ["|---|---|---|" + "---:|" * len(bits)]
        groups: dict[tuple[str, str, str], dict[int, float]] = {}
        for r in mine:
            key = (r["sampler"], str(r["query"]), str(r["levels"]))
            groups.setdefault(key, {})[int(r["bits"]) if r["bits"] != "" else -1] = r["tv"]
        for (name, query, levels), tvs in groups.items():
            cells = [
                f"{tvs[b]:.4f}" if b in tvs else f"{tvs.get(-1, float('nan')):.4f}" for b in bits
            ]
            lines.append(f"| {name} | {query} | {levels} | " + " | ".join(cells) + " |")
        top = max(bits) if bits else ""
        lines += [
            "",
            f"Mass on the top 1% / 10% of priorities, share never sampled, effective "
            f"exponent (AM rows at b={top}):",
            "",
            "| sampler | query | levels | top 1% | top 10% | never | exponent |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in mine:
            if r["bits"] in ("", top):
                lines.append(
                    f"| {r['sampler']} | {r['query']} | {r['levels']} | {r['top1']:.4f} | "
                    f"{r['top10']:.4f} | {r['never']:.4f} | {r['exponent']:.3f} |"
                )
        lines += _mc_lines(mine)
        lines.append("")
    return "\n".join(lines)


def _mc_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The Monte Carlo check of the AM rows, when one was run."""
    checked = [r for r in rows if "mc_tv" in r]
    if not checked:
        return []
    lines = [
        "",
        "Monte Carlo check of the analytic AM distributions (TV of the draws to the "
        "analytic law; floor: TV of as many exact i.i.d. draws):",
        "",
        "| sampler | query | levels | b | TV | floor |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in checked:
        lines.append(
            f"| {r['sampler']} | {r['query']} | {r['levels']} | {r['bits']} | "
            f"{r['mc_tv']:.4f} | {r['mc_floor']:.4f} |"
        )
    return lines


def run_bench(args: argparse.Namespace) -> int:
    """Run ``approxsim replay bench``: time every sampler, write JSON and Markdown.

    Args:
        args: The parsed command line.

    Returns:
        The exit status (0).

    Raises:
        CLIError: an unknown sampler or a size out of range.
        OutputExistsError: an output exists (without ``--overwrite``).
    """
    from approxsim._io import atomic_write_json, atomic_write_text, check_output
    from approxsim._runtime import Progress, machine_record, resolve_device, thread_settings
    from approxsim.replay.bench import DEFAULT_OPTIONS, bench_samplers
    from approxsim.replay.samplers import SAMPLER_NAMES

    names = args.samplers or list(SAMPLER_NAMES)
    unknown = [n for n in names if n not in SAMPLER_NAMES]
    if unknown:
        raise CLIError(f"unknown sampler {unknown[0]!r}; choose from {', '.join(SAMPLER_NAMES)}")
    if any(s > 26 for s in args.sizes):
        raise CLIError("--sizes are log2 N and must be <= 26")
    device = resolve_device(args.device, CLIError)
    out = Path(args.out)
    md = out.with_suffix(".md")
    check_output(out, overwrite=args.overwrite)
    check_output(md, overwrite=args.overwrite)
    sizes = [1 << s for s in args.sizes]
    bar = Progress(len(names) * len(sizes), "replay bench", not args.no_progress, "cell")
    with thread_settings(args.threads):
        try:
            rows = bench_samplers(
                sizes,
                args.batches,
                names,
                device=device,
                repeats=args.repeats,
                progress=bar.update,
            )
        finally:
            bar.close()
        machine = machine_record(device)
    result = {
        "machine": machine,
        "device": str(device),
        "repeats": args.repeats,
        "options": DEFAULT_OPTIONS,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result, indent=1, overwrite=args.overwrite)
    text = bench_markdown(rows, str(device))
    atomic_write_text(md, text, overwrite=args.overwrite)
    print(text)
    return 0


def bench_markdown(rows: list[dict[str, Any]], device: str) -> str:
    """The timing table of ``replay bench`` with each batch's cost counts.

    Args:
        rows: What :func:`approxsim.replay.bench.bench_samplers` returns.
        device: The device the times were measured on.

    Returns:
        Markdown text.
    """
    lines = [
        f"| sampler | N | B | sample ms ({device}) | update ms | searches | rows matched | "
        "candidates | dependent reads |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c = r["cost"]
        lines.append(
            f"| {r['sampler']} | 2^{r['n'].bit_length() - 1} | {r['batch']} | "
            f"{r['sample_ms']:.3f} | {r['update_ms']:.3f} | {c['searches']} | "
            f"{c['rows_matched']} | {c['candidates']} | {c['dependent_reads']} |"
        )
    return "\n".join(lines) + "\n"
