"""Loading EvoApproxLib's C models of approximate integer multipliers, checked against their
headers.

An EvoApproxLib file defines one function named ``mul<bits><u|s>_<id>`` (``mul8u_1JFF``,
``mul8s_1KV8``, ``mul12u_2NA``, ``mul8u_pwr_0_390_mae_00_0002``) and, in most releases, prints
the circuit's error metrics and its PDK45 synthesis results in ``//`` comment lines above it::

    // MAE% = 0.0018 %
    // MAE = 1.2
    // WCE% = 0.0061 %
    // PDK45_PWR = 0.391 mW

:func:`from_evoapprox` takes ``bits`` and signedness from the function's name, builds the table
with :func:`.intc.int_c_table` (the first parameter is the row whatever it is called: newer
files declare ``(const uint64_t B, const uint64_t A)``; some signed files are typed
``uint16_t f(uint8_t A, uint8_t B)`` and are right read this way), then compares every printed
error metric with :meth:`IntMultiplier.error_stats` of that table. A value within half a unit
of its last printed digit matches; up to two units off it loads with an
:class:`EvoApproxHeaderWarning` (the library has a few such slips in its headers); further off
it is refused with an :class:`EvoApproxHeaderError` naming the metric: a misread file (an
unsigned reading of a signed result) or a header of another circuit. No metric can tell the
operand order (each is a sum or maximum over all pairs, equal for a table and its transpose):
that comes from the rule that the first parameter is the row. The library reuses names across
releases for different circuits, so reports show the table's fingerprint beside the name.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from approxsim.errors import ApproxsimError
from approxsim.multipliers.core import MultiplierError
from approxsim.multipliers.intc import int_c_table
from approxsim.multipliers.integer import MAX_INT_BITS, MIN_INT_BITS, IntMultiplier

__all__ = [
    "ERROR_METRICS",
    "CIRCUIT_METRICS",
    "SLIP_UNITS",
    "EvoApproxError",
    "EvoApproxHeaderError",
    "EvoApproxHeaderWarning",
    "HeaderMetric",
    "EvoApproxFunction",
    "parse_header",
    "find_function",
    "compare_metric",
    "from_evoapprox",
]

#: Header error metrics and the :meth:`IntMultiplier.error_stats` key each is checked against.
ERROR_METRICS = {
    "MAE%": "mae_percent",
    "MAE": "mae",
    "WCE%": "wce_percent",
    "WCE": "wce",
    "WCRE%": "wcre_percent",
    "EP%": "ep_percent",
    "MRE%": "mre_percent",
    "MSE": "mse",
}
#: Header synthesis results kept in ``provenance`` (not checked: no table determines them).
CIRCUIT_METRICS = ("PDK45_PWR", "PDK45_AREA", "PDK45_DELAY")
#: A printed metric off by more than half a unit of its last digit, and up to this many
#: units, loads with a warning; further off, the file is refused.
SLIP_UNITS = 2

_HEADER_LINE = re.compile(
    r"^[ \t]*//[ \t]*([A-Za-z0-9_]+%?)[ \t]*=[ \t]*"
    r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[ \t]*([^\n]*?)[ \t]*$",
    re.MULTILINE,
)
_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_DEFINITION = re.compile(
    r"(?P<ret>[A-Za-z_][A-Za-z0-9_ \t]*?)[ \t\n]*\b(?P<name>mul(?P<bits>\d+)(?P<sign>[us])_\w*)"
    r"\s*\((?P<params>[^()]*)\)\s*\{"
)
_INT_TYPES = {
    "int8_t": 8,
    "uint8_t": 8,
    "char": 8,
    "signed char": 8,
    "unsigned char": 8,
    "int16_t": 16,
    "uint16_t": 16,
    "short": 16,
    "short int": 16,
    "unsigned short": 16,
    "unsigned short int": 16,
    "int32_t": 32,
    "uint32_t": 32,
    "int": 32,
    "signed": 32,
    "signed int": 32,
    "unsigned": 32,
    "unsigned int": 32,
    "int64_t": 64,
    "uint64_t": 64,
    "long": 64,
    "long int": 64,
    "unsigned long": 64,
    "long long": 64,
    "unsigned long long": 64,
}


class EvoApproxError(MultiplierError):
    """An EvoApproxLib file approxsim cannot read (no ``mul<bits><u|s>_...`` function, an
    operand width out of range, parameters too narrow for the operands)."""


class EvoApproxHeaderError(EvoApproxError):
    """A header metric disagrees with the table built from the file's C model."""


class EvoApproxHeaderWarning(ApproxsimError, UserWarning):
    """A header metric is off by a unit or two of its last printed digit (a header slip)."""


@dataclasses.dataclass(frozen=True)
class HeaderMetric:
    """One ``// KEY = VALUE UNIT`` line of an EvoApproxLib header.

    Attributes:
        key: ``"MAE%"``, ``"WCE"``, ``"PDK45_PWR"``...
        text: The number as printed (``"0.0018"``).
        unit: What follows the number (``"%"``, ``"mW"``, or ``""``).
    """

    key: str
    text: str
    unit: str

    @property
    def value(self) -> float:
        """The printed number."""
        return float(self.text)

    @property
    def digit(self) -> float:
        """The value of one unit of the last printed digit (``0.0001`` for ``"0.0018"``)."""
        exponent = Decimal(self.text).as_tuple().exponent
        return 10.0 ** int(exponent) if isinstance(exponent, int) else 1.0


@dataclasses.dataclass(frozen=True)
class EvoApproxFunction:
    """The model function of an EvoApproxLib file, as its definition reads.

    Attributes:
        name: The function's name (``mul8u_1JFF``).
        bits: Operand width from the name.
        signed: ``s`` in the name.
        signature: The definition's first line, normalised (``uint16_t mul8u_X(uint8_t a,
            uint8_t b)``).
        parameter_types: The declared types of the parameters, in order.
    """

    name: str
    bits: int
    signed: bool
    signature: str
    parameter_types: tuple[str, ...]


def parse_header(text: str) -> dict[str, HeaderMetric]:
    """The ``// KEY = VALUE UNIT`` metric lines of an EvoApproxLib file.

    Args:
        text: The file's source text.

    Returns:
        The known metrics (:data:`ERROR_METRICS` and :data:`CIRCUIT_METRICS`) found, by key;
        the first line of a key wins. Empty for a file without a header.
    """
    found: dict[str, HeaderMetric] = {}
    for key, number, unit in _HEADER_LINE.findall(text):
        if key not in ERROR_METRICS and key not in CIRCUIT_METRICS:
            continue
        try:
            Decimal(number)
        except InvalidOperation:  # pragma: no cover - the pattern admits numbers only
            continue
        found.setdefault(key, HeaderMetric(key, number, unit.strip()))
    return found


def _parameter_type(param: str) -> str:
    words = [w for w in param.replace("*", " * ").split() if w not in ("const", "volatile")]
    if len(words) >= 2 and words[-1] not in _INT_TYPES and not words[-1].endswith("_t"):
        words = words[:-1]  # drop the parameter's name
    return " ".join(words)


def find_function(
    text: str, function: str | None = None, *, where: str = "the file"
) -> EvoApproxFunction:
    """Find the ``mul<bits><u|s>_...`` function an EvoApproxLib file defines.

    Args:
        text: The file's source text.
        function: The function to take when the file defines several (default: the only one).
        where: How messages name the file.

    Returns:
        What its definition says.

    Raises:
        EvoApproxError: no such function, several without ``function``, an operand width
            outside 2..12 bits, or a parameter type too narrow for the operands.
    """
    code = _COMMENTS.sub(" ", text)
    found = {m.group("name"): m for m in _DEFINITION.finditer(code)}
    if function is not None:
        if function not in found:
            raise EvoApproxError(
                f"{where} defines no EvoApproxLib function {function!r} (named "
                f"mul<bits><u|s>_...); it defines {sorted(found) or 'none'}"
            )
        match = found[function]
    elif len(found) == 1:
        match = next(iter(found.values()))
    elif not found:
        raise EvoApproxError(
            f"{where} defines no EvoApproxLib multiplier function (named like mul8u_1JFF or "
            "mul8s_1KV8: mul<bits><u|s>_<id>); for another C model use IntMultiplier.from_c "
            "with bits= and signed="
        )
    else:
        raise EvoApproxError(
            f"{where} defines several multiplier functions {sorted(found)}; name one with function="
        )
    name, bits = match.group("name"), int(match.group("bits"))
    if not MIN_INT_BITS <= bits <= MAX_INT_BITS:
        raise EvoApproxError(
            f"{name} has {bits}-bit operands; approxsim's integer multipliers have "
            f"{MIN_INT_BITS} to {MAX_INT_BITS} bits (a 2^(2·bits)-entry table)"
        )
    params = [p.strip() for p in match.group("params").split(",") if p.strip()]
    types = tuple(_parameter_type(p) for p in params)
    for i, t in enumerate(types):
        width = _INT_TYPES.get(t)
        if width is not None and width < bits:
            raise EvoApproxError(
                f"{name} declares parameter {i + 1} as {t}, too narrow for its {bits}-bit "
                "operands; the file does not match its name"
            )
    ret = " ".join(match.group("ret").split()[-3:])
    signature = f"{ret} {name}({', '.join(' '.join(p.split()) for p in params)})"
    return EvoApproxFunction(name, bits, match.group("sign") == "s", signature, types)


def compare_metric(printed: HeaderMetric, computed: float) -> tuple[str, float]:
    """Compare a printed error metric with the value computed from the table.

    Args:
        printed: The header's metric.
        computed: The same metric of the table.

    Returns:
        ``(status, units)``: ``units`` is ``|computed - printed|`` in units of the last printed
        digit; ``status`` is ``"match"`` (at most half a unit), ``"slip"`` (at most
        :data:`SLIP_UNITS`) or ``"mismatch"``.
    """
    units = abs(computed - printed.value) / printed.digit
    # A hair of slack: the printed value and the computed one both passed through binary floats.
    if units <= 0.5 + 1e-9:
        return "match", units
    if units <= SLIP_UNITS + 1e-9:
        return "slip", units
    return "mismatch", units


def _check_metrics(
    header: dict[str, HeaderMetric], stats: dict[str, float], label: str, refuse: bool
) -> dict[str, dict[str, Any]]:
    """Compare every error metric of ``header`` with ``stats``; warn on slips, raise on more."""
    report: dict[str, dict[str, Any]] = {}
    bad = []
    for key, stat in ERROR_METRICS.items():
        if key not in header:
            continue
        printed = header[key]
        status, units = compare_metric(printed, stats[stat])
        report[key] = {
            "printed": printed.text,
            "computed": stats[stat],
            "units_off": round(units, 3),
            "status": status,
        }
        if status == "slip":
            warnings.warn(
                EvoApproxHeaderWarning(
                    f"{label}: the header says {key} = {printed.text} but the table gives "
                    f"{stats[stat]:.6g} ({units:.2g} units of the last printed digit off); "
                    "loaded anyway, as a slip in the header"
                ),
                stacklevel=3,
            )
        elif status == "mismatch":
            bad.append(f"{key} = {printed.text} printed, {stats[stat]:.6g} computed")
    if bad and refuse:
        raise EvoApproxHeaderError(
            f"{label}: the header disagrees with the table built from its C model: "
            f"{'; '.join(bad)}. The file may be misread (a signed circuit under an unsigned "
            "name, or the reverse) or the header may belong to another circuit; check the file, "
            "or load it anyway with check_header=False"
        )
    return report


def from_evoapprox(
    path: str | Path,
    *,
    function: str | None = None,
    name: str | None = None,
    check_header: bool = True,
    language: str | None = None,
    compiler: str | None = None,
    time_limit: float | None = None,
    cache_results: bool = True,
) -> IntMultiplier:
    """Load an EvoApproxLib C model, checking its table against the header's metrics.

    Args:
        path: The ``.c`` (or ``.cpp``) file.
        function: Which ``mul<bits><u|s>_...`` function to load when the file has several.
        name: Report name (default: the function's name).
        check_header: Refuse a file whose header metric is more than :data:`SLIP_UNITS`
            units of its last printed digit off (``False``: load it, recording the mismatch).
        language: ``"c"`` or ``"c++"``; default from the suffix.
        compiler: Compiler executable; default ``$CC``/``cc`` or ``$CXX``/``c++``.
        time_limit: Seconds the evaluation may take (see :func:`.intc.int_from_c`).
        cache_results: Reuse and store the table in the cache.

    Returns:
        The multiplier. ``provenance["evoapprox"]`` holds the function, its signature, every
        header metric with the computed value and its status, and the PDK45 results.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        EvoApproxError: no EvoApproxLib function in the file (see :func:`find_function`).
        EvoApproxHeaderError: a header metric is further off than a slip (the message names
            the metric, the printed and the computed value).
        CompilerError, CModelError: as :func:`.intc.int_from_c`.

    Warns:
        EvoApproxHeaderWarning: a metric off by a unit or two (a header slip), and a file
            without error metrics (nothing to check the table against).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"EvoApproxLib file not found: {file}")
    text = file.read_text(errors="replace")
    fn = find_function(text, function, where=str(file))
    table, provenance = int_c_table(
        file,
        fn.name,
        fn.bits,
        fn.signed,
        language=language,
        compiler=compiler,
        time_limit=time_limit,
        cache_results=cache_results,
    )
    header = parse_header(text)
    label = f"{file.name} ({fn.name})"
    stats = IntMultiplier(fn.name, fn.bits, fn.signed, table).error_stats()
    if not any(k in header for k in ERROR_METRICS):
        warnings.warn(
            EvoApproxHeaderWarning(
                f"{label} prints no error metrics (// MAE% = ...): its table is loaded "
                "unchecked; compare its error_stats() with the circuit's documentation"
            ),
            stacklevel=2,
        )
    metrics = _check_metrics(header, stats, label, check_header)
    provenance["builder"] = "evoapprox"
    provenance["evoapprox"] = {
        "function": fn.name,
        "signature": fn.signature,
        "metrics": metrics,
        "circuit": {
            k: {"value": header[k].value, "printed": header[k].text, "unit": header[k].unit}
            for k in CIRCUIT_METRICS
            if k in header
        },
    }
    return IntMultiplier(name or fn.name, fn.bits, fn.signed, table, provenance=provenance)
