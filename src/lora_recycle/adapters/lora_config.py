"""The numbers of a PEFT LoRA config, checked: finite, in range, and patterns compiled safely.

Shared by the adapter reader (merge, evaluate) and pool validation, so both refuse the same configs.
Every problem is an ``AdapterProblem`` whose code is a pool rejection reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lora_recycle.adapters.patterns import MatchBudget, PatternRules, compile_patterns, is_finite_number
from lora_recycle.adapters.untrusted import AdapterProblem

HARD_MAX_RANK = 1 << 16  # no projection of any model this toolkit serves is wider
MAX_ABS_ALPHA = 1e6  # lora_alpha in the wild is <= a few thousand; beyond this the scale is nonsense
DEFAULT_RANK = 8  # PEFT's LoraConfig default


@dataclass(frozen=True)
class LoraNumbers:
    """``r``, ``lora_alpha``, ``use_rslora`` and the compiled patterns of one config."""

    rank: int
    alpha: float
    use_rslora: bool
    rank_pattern: PatternRules
    alpha_pattern: PatternRules

    def module_rank(self, path: str, where: str) -> int:
        return int(self.rank_pattern.value(path, self.rank, where))  # values were checked at parse time

    def module_alpha(self, path: str, where: str) -> float:
        return float(self.alpha_pattern.value(path, self.alpha, where))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def check_rank(value: object, field: str, where: str, max_rank: int | None = None) -> int:
    """A LoRA rank: a positive integer (integral floats allowed), at most ``max_rank`` when given."""
    if not is_finite_number(value) or value != int(value) or value < 1:
        raise AdapterProblem("bad_config", f"{where}: field {field} must be a positive integer, got {_show(value)}")
    rank = int(value)
    if rank > HARD_MAX_RANK:
        raise AdapterProblem("bad_config", f"{where}: field {field} = {_show(rank)} is above {HARD_MAX_RANK}")
    if max_rank is not None and rank > max_rank:
        raise AdapterProblem("rank_too_large", f"{where}: field {field} = {rank} is above the rank cap {max_rank}")
    return rank


def check_alpha(value: object, field: str, where: str) -> float:
    """A LoRA alpha (or mlx scale): a finite number with ``|value| <= MAX_ABS_ALPHA``."""
    if not is_finite_number(value) or abs(value) > MAX_ABS_ALPHA:
        detail = f"must be a finite number within +-{MAX_ABS_ALPHA:g}, got {_show(value)}"
        raise AdapterProblem("bad_config", f"{where}: field {field} {detail}")
    return float(value)


def lora_numbers(config: dict, where: str, max_rank: int | None = None) -> LoraNumbers:
    """Check ``r``, ``lora_alpha``, ``use_rslora``, ``rank_pattern`` and ``alpha_pattern`` of a PEFT config."""
    rank = check_rank(config.get("r", DEFAULT_RANK), "r", where, max_rank)
    alpha = check_alpha(config.get("lora_alpha", rank), "lora_alpha", where)
    use_rslora = config.get("use_rslora", False)
    if use_rslora is None:
        use_rslora = False
    if not isinstance(use_rslora, bool):
        raise AdapterProblem("bad_config", f"{where}: field use_rslora must be true or false, got {_show(use_rslora)}")
    budget = MatchBudget()  # one for both fields: the adapter's pattern work is bounded as a whole
    rank_pattern = compile_patterns(config.get("rank_pattern"), "rank_pattern", where, budget)
    alpha_pattern = compile_patterns(config.get("alpha_pattern"), "alpha_pattern", where, budget)
    for key, _, value in rank_pattern.rules:
        check_rank(value, f"rank_pattern[{key!r}]", where, max_rank)
    for key, _, value in alpha_pattern.rules:
        check_alpha(value, f"alpha_pattern[{key!r}]", where)
    return LoraNumbers(rank, alpha, use_rslora, rank_pattern, alpha_pattern)


def lora_scale(alpha: float, rank: int, use_rslora: bool) -> float:
    """PEFT's scaling rule: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank
