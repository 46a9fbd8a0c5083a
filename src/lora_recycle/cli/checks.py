"""Parse-time checks of numeric options: click reports them as ``Invalid value for '--flag': ...`` (exit 2)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import typer

_TESTS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def _described(bounds: dict[str, float]) -> str:
    """``greater than 0``, ``at least 1`` or ``in [0, 1)``."""
    low = next(((key, bounds[key]) for key in ("ge", "gt") if key in bounds), None)
    high = next(((key, bounds[key]) for key in ("le", "lt") if key in bounds), None)
    if low and high:
        return f"in {'[' if low[0] == 'ge' else '('}{low[1]}, {high[1]}{']' if high[0] == 'le' else ')'}"
    key, value = low or high
    return {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "less than"}[key] + f" {value}"


def bounded(bounds: dict[str, float]) -> Callable[[float | None], float | None]:
    """A callback refusing values outside ``bounds`` (pydantic's ge/gt/le/lt, as ``MergeSettings`` declares them)
    and any NaN or infinity (``--lr inf``, ``--coef nan``)."""
    def check(value: float | None) -> float | None:
        if value is None:
            return value
        if not math.isfinite(value):
            raise typer.BadParameter(f"must be a finite number {_described(bounds)}, got {value}")
        if not all(_TESTS[key](value, bound) for key, bound in bounds.items()):
            raise typer.BadParameter(f"must be {_described(bounds)}, got {value}")
        return value

    return check


positive = bounded({"gt": 0})  # learning rates, alphas
non_negative = bounded({"ge": 0})  # pool scan's ratios, norms and seconds
