"""Seeded bootstrap confidence intervals over test examples and seeds (paired between two conditions).

A condition is ``{seed: correctness string}`` (``"1011..."``, one mark per test example, the same
examples in the same order for every condition), or ``{seed: [fractions]}`` where a row is the mean of
several runs (learning-rate variants, ``experiments/lr_variants.py``). Each resample draws seeds with replacement and,
independently, test examples with replacement, and applies the same draw to both conditions, so
the interval of a difference reflects both example noise and seed-to-seed variation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    seeds: int
    examples: int
    resamples: int

    def to_dict(self) -> dict:
        return asdict(self)

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


Marks = str | Sequence[float]  # "1011..." or per-example fractions (a mean over learning-rate variants)


def marks(condition: dict[int, Marks], seeds: list[int]) -> np.ndarray:
    """``[seeds, examples]`` matrix of correctness (0/1, or fractions where runs were averaged)."""
    rows = [[1.0 if c == "1" else 0.0 for c in m] if isinstance(m, str) else [float(c) for c in m]
            for m in (condition[s] for s in seeds)]
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"conditions were scored on different numbers of test examples: {sorted(lengths)}")
    return np.asarray(rows)


def bootstrap_difference(a: dict[int, Marks], b: dict[int, Marks] | None = None, resamples: int = 2000, seed: int = 0,
                         level: float = 0.95) -> Interval:
    """Accuracy of ``a`` minus accuracy of ``b`` (or ``a``'s accuracy when ``b`` is None), with its interval.

    Only seeds present in both conditions are used.

    >>> bootstrap_difference({0: "1111", 1: "1101"}, {0: "0000", 1: "0001"}, resamples=200).estimate
    0.75
    """
    seeds = sorted(set(a) & set(b)) if b is not None else sorted(a)
    if not seeds:
        raise ValueError("no seed is shared by the two conditions")
    diff = marks(a, seeds) - (marks(b, seeds) if b is not None else 0.0)
    n_seeds, n_examples = diff.shape
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for r in range(resamples):
        rows = rng.integers(0, n_seeds, n_seeds)
        cols = rng.integers(0, n_examples, n_examples)
        draws[r] = diff[np.ix_(rows, cols)].mean()
    tail = (1.0 - level) / 2
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return Interval(float(diff.mean()), float(low), float(high), level, n_seeds, n_examples, resamples)
