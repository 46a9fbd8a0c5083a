"""``merge``'s setting options, generated from ``MergeSettings``: a setting has one name from flag to field.

``--max-rank`` is the field ``max_rank``, with the field's help and bounds. A new setting is one field in
``recipe/settings.py``: its option, its check against the method's parameters and its place in the
settings follow from it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import fields
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import typer

from lora_recycle.cli.checks import bounded
from lora_recycle.recipe import choices
from lora_recycle.recipe.settings import CHOICE_FIELDS, MergeSettings

SETTING_NAMES = (*CHOICE_FIELDS, "k", "seed")  # every MergeSettings field a user may set on the command line
_BOUNDS = ("ge", "gt", "le", "lt")


def _option_type(hint: Any) -> Any:
    """What the command line parses a field as: words (a ``Literal``, or a word-or-number) as ``str``."""
    options = [hint] if get_origin(hint) in (Literal, tuple) else [a for a in get_args(hint) if a is not type(None)]
    if not options:
        return hint
    if len(options) > 1 or get_origin(options[0]) is Literal:
        return str
    return list[str] if get_origin(options[0]) is tuple else options[0]


def _help(name: str, text: str) -> str:
    """The field's help; a registry's field (``selection``, ``tuning``) also lists what it holds."""
    listed = choices.REGISTRY_CHOICES.get(name)
    return f"{text} Choices: {choices.names(listed())}." if listed else text


def _parameter(field, hint: Any) -> inspect.Parameter:
    kind = _option_type(hint)
    bounds = {key: field.metadata[key] for key in _BOUNDS if key in field.metadata}
    limits: dict[str, Any] = {}
    if kind is int and set(bounds) <= {"ge"}:
        limits = {"min": bounds["ge"]} if bounds else {}
    elif bounds:
        limits = {"callback": bounded(bounds)}
    option = typer.Option(choices.flag(field.name), help=_help(field.name, field.metadata.get("help", "")),
                          **limits)
    default = False if kind is bool else None  # None (a bool: False): not given, the preset's value stands
    annotation = Annotated[kind if kind is bool else kind | None, option]
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def setting_parameters() -> list[inspect.Parameter]:
    """One keyword-only option per user-settable ``MergeSettings`` field, in field order."""
    hints = get_type_hints(MergeSettings)
    return [_parameter(f, hints[f.name]) for f in fields(MergeSettings) if f.name in SETTING_NAMES]


def with_setting_options(command: Callable) -> Callable:
    """``command(..., **settings)`` with a typer option for every setting (its ``**settings`` receives them)."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = inspect.Signature([*own, *setting_parameters()])
    return command


def given_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The settings given on the command line, as field values (None and an unset flag: not given)."""
    hints = get_type_hints(MergeSettings)
    given = {name: value for name, value in values.items() if value is not None and value is not False}
    return {name: _field_value(name, hints[name], value) for name, value in given.items()}


def _field_value(name: str, hint: Any, value: Any) -> Any:
    """``value`` as the field holds it: a list as a tuple, a word-or-number (``--init``) as its number."""
    if isinstance(value, list):
        return tuple(value)
    words = [w for a in get_args(hint) if get_origin(a) is Literal for w in get_args(a)]
    if isinstance(value, str) and float in get_args(hint) and value not in words:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            from lora_recycle.errors import UserError

            raise UserError(f"{choices.flag(name)} {value!r}: expected {', '.join(words)} or a finite number")
        return number
    return value

