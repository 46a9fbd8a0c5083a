"""A per-adapter time budget, checked between bounded steps of validation (reason code ``timeout``)."""

from __future__ import annotations

import time


class ValidationTimeout(Exception):
    """Validation of one adapter used up its time budget."""


class Deadline:
    """``seconds`` from now (monotonic clock); ``check`` raises ValidationTimeout once it has passed.

    Every step between two checks is bounded (one tensor, one hash chunk, one pattern match with its own
    timeout), so an adapter overruns its budget by at most one step.
    """

    def __init__(self, seconds: float, clock=time.monotonic) -> None:  # noqa: ANN001 - any () -> float
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def check(self, doing: str) -> None:
        if self._clock() >= self._end:
            raise ValidationTimeout(f"validation took longer than {self.seconds:g} s (while {doing})")
