"""What the CLI and the docs offer, read from the registries (no list of choices is written twice).

Light to import: the registries name their implementations, so ``--help`` needs no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

from lora_recycle.errors import UserError
from lora_recycle.merging.options import Activation, Granularity, Strategy
from lora_recycle.recipe.presets import METHODS, preset
from lora_recycle.recipe.settings import MergeSettings
from lora_recycle.selection.strategies import STRATEGIES, catalog_strategies
from lora_recycle.tuning.tuners import TUNERS, adaptive_tuners

GRANULARITIES: tuple[str, ...] = get_args(Granularity)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
STRATEGIES_OF_LAYERS: tuple[str, ...] = get_args(Strategy)


def _literal_values(hint: Any) -> tuple[str, ...] | None:
    """The words of a ``Literal`` type (or ``Literal[...] | None``); None for any other type."""
    options = [hint] if get_origin(hint) is Literal else [a for a in get_args(hint) if a is not type(None)]
    return get_args(options[0]) if len(options) == 1 and get_origin(options[0]) is Literal else None


# Every MergeSettings field whose type is a fixed set of words: the choices the CLI checks and lists.
LITERAL_CHOICES: dict[str, tuple[str, ...]] = {
    f.name: values for f in fields(MergeSettings)
    if (values := _literal_values(get_type_hints(MergeSettings)[f.name])) is not None}


def names(items) -> str:
    """``a, b or c``."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def check_choice(flag: str, value: str, allowed) -> None:
    """One-line error when ``value`` is not one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise UserError(f"{flag} {value!r}: choose one of {', '.join(allowed)}")


def flag(name: str) -> str:
    """The command-line spelling of a ``MergeSettings`` field: ``max_rank`` -> ``--max-rank``."""
    return "--" + name.replace("_", "-")


def params_problem(method_name: str, given: Iterable[str], spell: Callable[[str], str] = str) -> str | None:
    """Why settings ``given`` (field names) do not fit the method (None if they do), each named by ``spell``.

    The one check of stray settings, for the CLI (``spell=flag``) and the experiment file alike.
    """
    method = METHODS.lookup(method_name)
    stray = [name for name in given if name not in method.params]
    if not stray:
        return None
    takers = [name for name, entry in METHODS.items() if stray[0] in entry.params]
    if takers and all(METHODS[name].routed for name in takers):  # a routing setting given to another method
        return f"{spell(stray[0])} applies to {spell('method')} {names(takers)} only"
    if method.routed:
        return f"{spell(stray[0])} does not apply to {method_name} (routing learns and merges nothing)"
    takes = ", ".join(spell(p) for p in method.params)
    return f"{', '.join(map(spell, stray))} does not apply to method {method_name} (it takes: {takes})"


def settings_from_flags(method: str, given: dict[str, Any]) -> MergeSettings:
    """The preset of ``method`` with the command line's settings (field -> value, only those given), each checked."""
    problem = params_problem(method, [name for name in given if name != "seed"], flag)
    if problem:
        raise UserError(problem)
    for name, value in given.items():
        allowed = LITERAL_CHOICES.get(name)
        if allowed is not None:
            check_choice(flag(name), value, allowed)
    if "selection" in given:
        check_choice("--selection", given["selection"], STRATEGIES)
    settings = preset(method).with_overrides(**given)
    if settings.adaptive:
        check_choice("--tuning", settings.tuning, adaptive_tuners())
    return settings


# Fields that name a registry entry, and what the command line offers for them.
REGISTRY_CHOICES: dict[str, Callable[[], tuple[str, ...]]] = {"selection": catalog_strategies,
                                                               "tuning": adaptive_tuners}


def methods_help() -> str:
    return names(METHODS)


def selection_help() -> str:
    return names(catalog_strategies())


def _kind(method) -> str:
    s = method.settings
    if method.routed:
        return ("routed per token (top_k = 3), not servable as one adapter: every layer runs all k experts' "
                "low-rank products per token")
    if s.adaptive:
        return "adaptive"
    if method.merge is None:
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
