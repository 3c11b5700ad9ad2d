"""Plain-text tables for approxsim's command-line reports."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["text_table"]


def text_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    left: int = 1,
    rule: str | None = "line",
) -> list[str]:
    """Column-aligned lines: the header, a rule, then the rows.

    Args:
        header: Column titles.
        rows: Cells as strings, one sequence per row (as many as ``header``).
        left: The first ``left`` columns are left-aligned (text), the rest right-aligned.
        rule: ``"line"``: a dash line as long as the header; ``"columns"``: dashes under each
            column; ``None``: no rule.

    Returns:
        The lines, trailing spaces stripped.
    """
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    head = fmt(header)
    lines = [head]
    if rule == "line":
        lines.append("-" * len(head))
    elif rule == "columns":
        lines.append("  ".join("-" * w for w in widths))
    return lines + [fmt(r) for r in rows]
