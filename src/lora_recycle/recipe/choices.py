"""What the CLI and the docs offer, read from the registries (no list of choices is written twice).

Light to import: the registries name their implementations, so ``--help`` needs no torch.
"""

from __future__ import annotations

from typing import get_args

from lora_recycle.errors import UserError
from lora_recycle.merging.options import Activation, Granularity, Strategy
from lora_recycle.recipe.presets import METHODS, preset
from lora_recycle.recipe.settings import MergeSettings
from lora_recycle.selection.strategies import STRATEGIES, catalog_strategies
from lora_recycle.tuning.tuners import TUNERS, adaptive_tuners

GRANULARITIES: tuple[str, ...] = get_args(Granularity)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
STRATEGIES_OF_LAYERS: tuple[str, ...] = get_args(Strategy)


def names(items) -> str:
    """``a, b or c``."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def check_choice(flag: str, value: str, allowed) -> None:
    """One-line error when ``value`` is not one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise UserError(f"{flag} {value!r}: choose one of {', '.join(allowed)}")


def check_params(method_name: str, given: dict[str, object]) -> None:
    """Refuse settings the method does not take (``given``: ``--flag -> value``, None meaning not given)."""
    method = METHODS.lookup(method_name)
    stray = [flag for flag, value in given.items() if value is not None
             and flag.removeprefix("--").replace("-", "_") not in method.params]
    if stray:
        takes = ", ".join(f"--{p.replace('_', '-')}" for p in method.params)
        raise UserError(f"{', '.join(stray)} does not apply to method {method_name} (it takes: {takes})")


def settings_from_flags(method: str, given: dict[str, object], seed: int, selection: str | None = None,
                        k: int | None = None) -> MergeSettings:
    """The preset of ``method`` with the command line's overrides (``--flag -> value``), each checked."""
    check_params(method, given)
    settings = preset(method).with_overrides(**{f.removeprefix("--").replace("-", "_"): v for f, v in given.items()},
                                             seed=seed)
    if settings.adaptive:
        check_choice("--tuning", settings.tuning, adaptive_tuners())
    check_choice("--granularity", settings.granularity, GRANULARITIES)
    check_choice("--activation", settings.activation, ACTIVATIONS)
    check_choice("--strategy", settings.strategy, STRATEGIES_OF_LAYERS)
    if selection is not None:
        check_choice("--selection", selection, STRATEGIES)
    return settings.with_overrides(selection=selection, k=k)


def methods_help() -> str:
    return names(METHODS)


def selection_help() -> str:
    return names(catalog_strategies())


def tuning_help() -> str:
    return names(adaptive_tuners())


def _kind(method) -> str:
    s = method.settings
    if method.routed:
        return ("routed per token (top_k = 3), not servable as one adapter: every layer runs all k experts' "
                "low-rank products per token")
    if s.adaptive:
        return "adaptive"
    if method.combine is None:
        return "fixed 1/k, exact"
    coef = "1/k" if s.coef is None else f"C = {s.coef}"
    if method.factored:
        return f"fixed {coef}, exact from the factors"
    prune = f", prune p = {s.prune}" if "prune" in method.params else ""
    return f"fixed {coef}{prune}, per-module dense, exact export (any rank)"


def methods_table() -> list[str]:
    """The README's methods table (markdown lines), one row per registered merge method."""
    lines = ["| method | kind | selection | tuning | granularity | activation | init | steps / lr | reference |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, method in METHODS.items():
        s = method.settings
        selection = s.selection + (f" (k = {s.k})" if s.k else "")
        if method.routed:
            selection = f"{s.selection} (up to k = 30)"
        if s.adaptive:
            init = {"zero": "0", "uniform": "1/k"}.get(str(s.init), str(s.init))
            budget = f"{s.steps} evaluations" if s.tuning == "gradient_free" else f"{s.steps} / {s.lr:g}"
            design = [s.tuning, s.granularity, s.activation, init, budget]
        else:
            design = ["none", "", "", "", ""]
        lines.append(f"| `{name}` | {_kind(method)} | {selection} | {' | '.join(design)} | {method.paper} |")
    return lines


def strategies_table() -> list[str]:
    """The README's selection table, one row per registered strategy."""
    lines = ["| selection | needs | picks |", "| --- | --- | --- |"]
    for name, strategy in STRATEGIES.items():
        lines.append(f"| `{name}` | {strategy.needs} | {strategy.help} |")
    return lines


def tuners_table() -> list[str]:
    """The README's tuning table, one row per registered tuner."""
    lines = ["| tuning | what it does |", "| --- | --- |"]
    lines += [f"| `{name}` | {tuner.help} |" for name, tuner in TUNERS.items()]
    return lines


if __name__ == "__main__":  # python -m lora_recycle.recipe.choices: the README's tables
    print("\n\n".join("\n".join(table()) for table in (methods_table, strategies_table, tuners_table)))
