"""Turn the CLI library's own exceptions into ``error: ...`` lines, whichever click the installed typer uses.

typer >= 0.2x vendors click as ``typer._click``; older typers raise ``click`` exceptions. Both are recognised
by class name along the exception's MRO, so no particular copy of click has to be importable.
"""

from __future__ import annotations

import re

_LIBRARIES = ("click", "typer")


def _library_classes(exc: BaseException) -> set[str]:
    """Names of the click/typer classes ``exc`` is an instance of (``UsageError``, ``ClickException``, ...)."""
    return {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.split(".")[0] in _LIBRARIES}


def is_cli_exception(exc: BaseException) -> bool:
    """True for a click ``ClickException`` (usage errors included), from any copy of click."""
    return "ClickException" in _library_classes(exc)


def is_help_request(exc: BaseException) -> bool:
    """True for click >= 8.2's ``NoArgsIsHelpError`` (a group or command called with no arguments)."""
    return "NoArgsIsHelpError" in _library_classes(exc)


def is_exit(exc: BaseException) -> bool:
    """True for ``typer.Exit`` / ``click.exceptions.Exit`` (a deliberate exit with a code)."""
    return "Exit" in _library_classes(exc) and hasattr(exc, "exit_code")


def is_abort(exc: BaseException) -> bool:
    """True for ``typer.Abort`` / ``click.Abort`` (e.g. Ctrl-C at a prompt)."""
    return "Abort" in _library_classes(exc)


def one_line(text: str) -> str:
    """Collapse whitespace (newlines included) so a message prints as one line; other control characters (an
    adapter id's ESC) are escaped."""
    from lora_recycle.escaping import printable

    return printable(re.sub(r"\s+", " ", str(text)).strip())


def error_lines(exc: BaseException) -> list[str]:
    """``["error: <message>", "usage: <command line> (see --help)"]``; the usage line only when click knows it."""
    format_message = getattr(exc, "format_message", None)
    message = one_line(format_message() if callable(format_message) else exc)
    lines = [f"error: {message[:1].lower() + message[1:]}"]
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        try:
            usage = one_line(ctx.get_usage())
        except Exception:  # a usage line is a courtesy; never let it hide the error
            usage = ""
        usage = re.sub(r"^usage:\s*", "", usage, flags=re.IGNORECASE)
        if usage:
            lines.append(f"usage: {usage} (see {ctx.command_path} --help)")
    return lines


def exit_code_of(exc: BaseException) -> int:
    """The exit code a click exception asks for: 2 for usage errors, 1 for other click errors."""
    code = getattr(exc, "exit_code", 1)
    return code if isinstance(code, int) else 1
