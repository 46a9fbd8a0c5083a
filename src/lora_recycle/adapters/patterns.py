"""PEFT's ``rank_pattern`` / ``alpha_pattern`` rule, safe on hostile keys.

PEFT takes the first key ``k`` (in config order) for which ``re.match(rf"(.*\\.)?({k})$", module_name)``
matches. Keys come from strangers' configs, and ``re`` backtracks exponentially on keys like
``(.|.|.)*[A-Z]``. Here a key must compile under ``re`` (so it means what PEFT would make of it), is at
most ``MAX_KEY_CHARS`` long, and is matched by the ``regex`` engine (same syntax and semantics for these
patterns) under a per-match timeout; a key that exceeds it is a ``bad_pattern`` problem, never a hang.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import regex

from lora_recycle.adapters.untrusted import AdapterProblem

MAX_KEY_CHARS = 1024
MAX_KEYS = 10_000
MATCH_TIMEOUT_S = 0.25  # a module name is < 100 characters; sane keys match in microseconds


@dataclass(frozen=True)
class PatternRules:
    """Compiled ``key -> value`` rules of one pattern field, in config order."""

    field: str
    rules: tuple[tuple[str, regex.Pattern, object], ...]

    def value(self, path: str, default: object, where: str) -> object:
        """The value of the first key matching the end of ``path`` (PEFT's rule), else ``default``."""
        for key, pattern, value in self.rules:
            try:
                found = pattern.match(path, timeout=MATCH_TIMEOUT_S)
            except TimeoutError:
                raise AdapterProblem(
                    "bad_pattern",
                    f"{where}: {self.field} key {key!r} took over {MATCH_TIMEOUT_S} s on {path} "
                    "(catastrophic backtracking)",
                ) from None
            if found:
                return value
        return default


def compile_patterns(patterns: object, field: str, where: str) -> PatternRules:
    """Check and compile a ``rank_pattern`` / ``alpha_pattern`` object (None or {} means no rules)."""
    if patterns is None:
        return PatternRules(field, ())
    if not isinstance(patterns, Mapping):
        raise AdapterProblem("bad_config", f"{where}: field {field} must be an object, got {type(patterns).__name__}")
    if len(patterns) > MAX_KEYS:
        raise AdapterProblem("bad_pattern", f"{where}: {field} has {len(patterns)} keys (limit {MAX_KEYS})")
    rules = []
    for key, value in patterns.items():
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
            raise AdapterProblem("bad_pattern", f"{where}: {field} key {str(key)[:80]!r} is empty or too long")
        try:
            re.compile(key)
            compiled = regex.compile(rf"(.*\.)?({key})$", regex.VERSION0)
        except (re.error, regex.error, OverflowError, RecursionError) as exc:
            detail = f"{where}: {field} key {key[:80]!r} is not a valid regex ({exc})"
            raise AdapterProblem("bad_pattern", detail) from None
        rules.append((key, compiled, value))
    return PatternRules(field, tuple(rules))


def pattern_value(patterns: Mapping, path: str, default: object, where: str = "adapter_config.json") -> object:
    """PEFT's rule for one lookup: the value of the first key matching the end of ``path``."""
    return compile_patterns(patterns, "pattern", where).value(path, default, where)


def is_finite_number(value: object) -> bool:
    """A real JSON number (not a bool) that is neither NaN nor infinite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) if isinstance(value, float) else True
