"""Parse-time checks of numeric options: click reports them as ``Invalid value for '--flag': ...`` (exit 2)."""

from __future__ import annotations

import typer


def positive(value: float | None) -> float | None:
    """Refuse zero and negative values (learning rates, alphas)."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be greater than 0, got {value}")
    return value


def fraction(value: float | None) -> float | None:
    """Refuse values outside [0, 1) (drop fractions: 1 would drop everything)."""
    if value is not None and not 0 <= value < 1:
        raise typer.BadParameter(f"must be in [0, 1), got {value}")
    return value
