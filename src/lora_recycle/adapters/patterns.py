"""PEFT's ``rank_pattern`` / ``alpha_pattern`` rule, safe on hostile keys.

PEFT takes the first key ``k`` (in config order) for which ``re.match(rf"(.*\\.)?({k})$", module_name)``
matches. Keys come from strangers' configs, and ``re`` backtracks exponentially on keys like
``(.|.|.)*X``. A key is therefore a ``bad_pattern`` problem, never a hang, unless

- it compiles under ``re`` (so it means what PEFT would make of it) and is at most ``MAX_KEY_CHARS`` long;
- it has the shape of a linear-time-enough regex: no quantified group that contains another quantifier or
  an alternation (the shapes behind catastrophic backtracking), no backreferences, and at most
  ``MAX_REPEATS`` quantifiers (backtracking is polynomial of that degree in the short module name);
- and it matches within ``MATCH_TIMEOUT_S`` in the ``regex`` engine (same syntax and semantics for such
  keys), a backstop for anything the shape rule lets through.

Every key is tried against every module, so many slow-but-legal keys (a thousand look-aheads at 30 ms each)
add up to minutes though each stays within its own timeout. The work of one adapter's patterns is therefore
bounded as a whole: at most ``MAX_KEYS`` keys per field, and ``MATCH_BUDGET_S`` seconds of matching (both
fields, every module) per adapter, wherever its config is read (pool validation, merge, evaluate).
"""

from __future__ import annotations

import math
import re
import re._parser as sre_parse
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import regex

from lora_recycle.adapters.untrusted import AdapterProblem

MAX_KEY_CHARS = 1024
MAX_KEYS = 1024  # PEFT writes one key per module that differs: 7 x 126 layers of the largest Llama is 882
MAX_REPEATS = 4
MATCH_TIMEOUT_S = 0.25  # a module name is < 100 characters; sane keys match in microseconds
MATCH_BUDGET_S = 2.0  # all matching of one adapter; 2 x 1,024 plain keys x 224 modules take ~1 s on a busy CPU
_REPEATS = {sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, sre_parse.POSSESSIVE_REPEAT}
_BACKREFS = {sre_parse.GROUPREF, sre_parse.GROUPREF_EXISTS}


class MatchBudget:
    """Seconds of pattern matching one adapter may spend, over both pattern fields and every module.

    ``match`` raises a ``bad_pattern`` AdapterProblem once they are used up; one match overruns by at most its
    own timeout.
    """

    def __init__(self, seconds: float = MATCH_BUDGET_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.left = seconds
        self._clock = clock

    def match(self, pattern: regex.Pattern, path: str, where: str, field: str) -> bool:
        """``pattern.match(path)`` within what is left (at most ``MATCH_TIMEOUT_S``), its time charged."""
        self.check(where, field)
        timeout = min(MATCH_TIMEOUT_S, self.left)
        start = self._clock()
        try:
            return pattern.match(path, timeout=timeout) is not None
        except TimeoutError:
            if timeout < MATCH_TIMEOUT_S:  # cut short by the budget, not by its own timeout: say so
                self.left = 0.0
                self.check(where, field)
            raise
        finally:
            self.left -= self._clock() - start

    def check(self, where: str, field: str) -> None:
        if self.left <= 0:
            raise AdapterProblem(
                "bad_pattern",
                f"{where}: {field} took over {self.seconds:g} s of regex work in total (the per-adapter pattern "
                "budget; too many or too slow keys)",
            )


@dataclass(frozen=True)
class PatternRules:
    """Compiled ``key -> value`` rules of one pattern field, in config order, and the adapter's budget."""

    field: str
    rules: tuple[tuple[str, regex.Pattern, object], ...]
    budget: MatchBudget = dataclass_field(default_factory=MatchBudget, compare=False, repr=False)

    def value(self, path: str, default: object, where: str) -> object:
        """The value of the first key matching the end of ``path`` (PEFT's rule), else ``default``."""
        for key, pattern, value in self.rules:
            try:
                found = self.budget.match(pattern, path, where, self.field)
            except TimeoutError:
                raise AdapterProblem(
                    "bad_pattern",
                    f"{where}: {self.field} key {key!r} took over {MATCH_TIMEOUT_S} s on {path} "
                    "(catastrophic backtracking)",
                ) from None
            if found:
                return value
        return default


def compile_patterns(patterns: object, field: str, where: str, budget: MatchBudget | None = None) -> PatternRules:
    """Check and compile a ``rank_pattern`` / ``alpha_pattern`` object (None or {} means no rules).

    ``budget`` is the adapter's matching time (shared by its two fields); compiling is bounded by the key
    count and length.
    """
    budget = MatchBudget() if budget is None else budget
    if patterns is None:
        return PatternRules(field, (), budget)
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
            problem = unsafe_shape(key)
            compiled = regex.compile(rf"(.*\.)?({key})$", regex.VERSION0)
        except (re.error, regex.error, OverflowError, RecursionError) as exc:
            detail = f"{where}: {field} key {key[:80]!r} is not a valid regex ({exc})"
            raise AdapterProblem("bad_pattern", detail) from None
        if problem:
            raise AdapterProblem("bad_pattern", f"{where}: {field} key {key[:80]!r} {problem}")
        rules.append((key, compiled, value))
    return PatternRules(field, tuple(rules), budget)


def unsafe_shape(key: str) -> str | None:
    """Why ``key`` could make ``re`` backtrack badly on a module name, or None if its shape is safe."""
    repeats = 0
    stack = [(sre_parse.parse(key), False)]
    while stack:
        items, in_repeat = stack.pop()
        for op, av in items:
            if op in _BACKREFS:
                return "uses a backreference"
            if op in _REPEATS:
                _, high, body = av
                if high > 1:
                    if in_repeat:
                        return "nests a quantifier inside a quantified group (catastrophic backtracking)"
                    repeats += 1
                stack.append((body, in_repeat or high > 1))
            elif op is sre_parse.BRANCH:
                if in_repeat:
                    return "repeats an alternation (catastrophic backtracking)"
                stack.extend((branch, in_repeat) for branch in av[1])
            elif op is sre_parse.SUBPATTERN:
                stack.append((av[-1], in_repeat))
            elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
                stack.append((av[1], in_repeat))
            elif op is sre_parse.ATOMIC_GROUP:
                stack.append((av, in_repeat))
    if repeats > MAX_REPEATS:
        return f"has {repeats} quantifiers (limit {MAX_REPEATS})"
    return None


def pattern_value(patterns: Mapping, path: str, default: object, where: str = "adapter_config.json") -> object:
    """PEFT's rule for one lookup: the value of the first key matching the end of ``path``."""
    return compile_patterns(patterns, "pattern", where).value(path, default, where)


def is_finite_number(value: object) -> bool:
    """A real JSON number (not a bool) that is neither NaN nor infinite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) if isinstance(value, float) else True
