"""List options take space-separated values: ``--adapters A B C`` means ``--adapters A --adapters B --adapters C``.

click has no ``nargs='+'`` for options, so the command line is rewritten before click parses it: after a
multi-value option, every following token that does not start with ``-`` is another value of it (as argparse's
``nargs='+'``). Repeating the flag keeps working; ``--`` ends option parsing as usual.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


def expand_list_options(tokens: Sequence[str], list_flags: Collection[str]) -> list[str]:
    """``tokens`` with every extra value after a flag in ``list_flags`` given its own copy of that flag."""
    out: list[str] = []
    current: str | None = None  # the list flag whose values we are reading
    awaiting_first = False
    for index, token in enumerate(tokens):
        if token == "--":
            out.extend(tokens[index:])
            break
        if token.startswith("-") and token != "-":
            name, has_value, _ = token.partition("=")
            current = name if name in list_flags else None
            awaiting_first = current is not None and not has_value
            out.append(token)
        elif current is not None and not awaiting_first:
            out.extend((current, token))
        else:
            awaiting_first = False
            out.append(token)
    return out


def _subcommands(command) -> dict:
    return getattr(command, "commands", None) or {}


def _list_flags(command) -> set[str]:
    """Option names of ``command``'s multi-value (``multiple=True``) options that take a value."""
    flags: set[str] = set()
    for param in getattr(command, "params", ()):
        if getattr(param, "multiple", False) and not getattr(param, "is_flag", False):
            flags.update(getattr(param, "opts", ()))
    return flags


def expand_for_command(root, argv: Sequence[str]) -> list[str]:
    """Rewrite ``argv`` for the (sub)command it names in the click command tree under ``root``."""
    command, index = root, 0
    while _subcommands(command) and index < len(argv) and argv[index] in _subcommands(command):
        command = _subcommands(command)[argv[index]]
        index += 1
    flags = _list_flags(command)
    if not flags:
        return list(argv)
    return [*argv[:index], *expand_list_options(argv[index:], flags)]
