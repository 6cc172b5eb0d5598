"""Parameter sweeps: turn a circuit's `sweep:` block into parameter bindings.

Pure functions. Values are materialised per variable (a few thousand numbers at most), but
the combinations are generated lazily, so a 100,000-point grid never sits in memory whole.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

# One variable may take at most this many values, and one circuit's sweep at most
# MAX_POINTS combinations: beyond that a typo (a missing decimal point, an extra zero) is far
# likelier than intent, and the state database would grow past what one machine handles well.
MAX_VALUES = 1_000_000
MAX_POINTS = 5_000_000


class SweepError(Exception):
    def __init__(self, message: str, variable: str | None = None, key: str | None = None):
        super().__init__(message)
        self.variable = variable
        self.key = key  # the sub-key (linspace, range...) the message is about


def values_of(variable: str, spec) -> list:
    """The values one variable takes: a list, a single number, {values|linspace|range: ...}."""
    if isinstance(spec, bool):
        raise SweepError("a sweep value must be a number", variable)
    if isinstance(spec, (int, float)):
        return _checked_list(variable, [spec])
    if isinstance(spec, list):
        return _checked_list(variable, spec)
    if isinstance(spec, dict) and len(spec) == 1:
        (kind, args), = spec.items()
        if kind == "values" and isinstance(args, list):
            return _checked_list(variable, args)
        if kind == "linspace":
            return _linspace(variable, args)
        if kind == "range":
            return _range(variable, args)
    raise SweepError("expected a list of numbers, a number, or one of "
                     "{values: [...]}, {linspace: [start, stop, count]}, {range: [start, stop, step]}",
                     variable)


def _is_number(value) -> bool:
    """A number a float can hold: not a boolean, NaN, infinity, nor an integer like 10**400
    (on which math.isfinite raises OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value) -> str:
    """A value for a message: a 400-digit integer is summed up, not printed."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:12]}... ({len(text)} digits)"


def _checked_list(variable: str, values: list) -> list:
    if not values:
        raise SweepError("the list of values is empty", variable)
    bad = [v for v in values if not _is_number(v)]
    if bad:
        raise SweepError(f"sweep values must be finite numbers, got {_shown(bad[0])}", variable)
    if len(values) > MAX_VALUES:
        raise SweepError(f"{len(values)} values; at most {MAX_VALUES} per variable", variable)
    return list(values)


def _linspace(variable: str, args) -> list:
    if (not isinstance(args, list) or len(args) != 3 or isinstance(args[2], bool)
            or not isinstance(args[2], int)):
        raise SweepError("linspace takes [start, stop, count] with an integer count", variable, "linspace")
    start, stop, count = args
    _check_ends("linspace", variable, args[:2])
    if not 1 <= count <= MAX_VALUES:
        raise SweepError(f"linspace count must be between 1 and {MAX_VALUES}, got {_shown(count)}",
                         variable, "linspace")
    if count == 1:
        return [float(start)]
    step = (stop - start) / (count - 1)
    if not math.isfinite(step):  # finite ends can be further apart than a float says
        raise SweepError(f"linspace {args} overflows a float", variable, "linspace")
    return [start + i * step if i < count - 1 else float(stop) for i in range(count)]


def _range(variable: str, args) -> list:
    if not isinstance(args, list) or not 1 <= len(args) <= 3:
        raise SweepError("range takes [stop], [start, stop] or [start, stop, step]", variable, "range")
    _check_ends("range", variable, args)
    if len(args) == 1:  # like Python's range(stop)
        start, stop, step = 0, args[0], 1
    elif len(args) == 2:
        start, stop, step = args[0], args[1], 1
    else:
        start, stop, step = args
    if step == 0:
        raise SweepError("range step must not be zero", variable, "range")
    if not math.isfinite(stop - start):  # finite ends can be further apart than a float says
        raise SweepError(f"range {args} overflows a float", variable, "range")
    span = (stop - start) / step  # infinite for a tiny step: math.ceil would raise OverflowError
    if span <= 0:
        raise SweepError(f"range {args} is empty", variable, "range")
    if span > MAX_VALUES:
        count = f"{math.ceil(span)}" if math.isfinite(span) else "too many"
        raise SweepError(f"range {args} has {count} values; at most {MAX_VALUES}",
                         variable, "range")
    # Float steps can land a hair past a whole count: (0.4 - 0.1) / 0.1 is 3.0000000000000004,
    # and ceil would add a fourth value, 0.4, that the excluded stop forbids.
    count = round(span) if abs(span - round(span)) < 1e-9 else math.ceil(span)
    count = max(count, 1)  # a span above 0 holds its start: range [1e-77] is [0]
    return [start + i * step for i in range(count)]


def _check_ends(kind: str, variable: str, numbers: list) -> None:
    bad = [v for v in numbers if not _is_number(v)]
    if bad:
        raise SweepError(f"{kind} takes finite numbers, got {_shown(bad[0])}", variable, kind)


def point_count(values: dict, mode: str) -> int:
    """How many bindings ``combinations`` will yield, without generating them."""
    if not values:
        return 1
    if mode == "zip":
        return len(next(iter(values.values())))
    return math.prod(len(v) for v in values.values())


def check_zip(values: dict) -> None:
    lengths = {name: len(v) for name, v in values.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{n}: {k}" for n, k in lengths.items())
        raise SweepError(f"sweep_mode zip needs variables of equal length ({detail})")


def combinations(values: dict, mode: str) -> Iterator[dict]:
    """Yield one {variable: value} binding per sweep point, variables in sorted order."""
    names = sorted(values)
    if not names:
        yield {}
        return
    columns = [values[n] for n in names]
    rows = zip(*columns) if mode == "zip" else itertools.product(*columns)
    for row in rows:
        yield dict(zip(names, row))
