"""Pure parts of the command line: list-option expansion and recognising click's exceptions in any copy."""

from __future__ import annotations

import importlib

import pytest

from lora_recycle.cli.lists import expand_for_command, expand_list_options
from lora_recycle.cli.usage import error_lines, is_cli_exception, is_exit

FLAGS = {"--adapters", "--ids"}


@pytest.mark.parametrize("tokens,expected", [
    (["--adapters", "A", "B", "C"], ["--adapters", "A", "--adapters", "B", "--adapters", "C"]),
    (["--adapters", "A", "--adapters", "B"], ["--adapters", "A", "--adapters", "B"]),
    (["--adapters", "A", "B", "--model", "M", "X"], ["--adapters", "A", "--adapters", "B", "--model", "M", "X"]),
    (["--adapters=A", "B"], ["--adapters=A", "--adapters", "B"]),
    (["--adapters", "A", "--json", "X"], ["--adapters", "A", "--json", "X"]),
    (["--ids", "a", "b", "--", "c"], ["--ids", "a", "--ids", "b", "--", "c"]),
    (["--model", "M", "N"], ["--model", "M", "N"]),
    (["--adapters"], ["--adapters"]),
])
def test_expand_list_options(tokens, expected):
    assert expand_list_options(tokens, FLAGS) == expected


def test_expansion_follows_the_named_subcommand():
    import typer

    from lora_recycle.cli import _register, app

    _register()
    root = typer.main.get_command(app)
    argv = ["merge", "--adapters", "A", "B", "--out", "o"]
    assert expand_for_command(root, argv) == ["merge", "--adapters", "A", "--adapters", "B", "--out", "o"]
    argv = ["pool", "scan", "src", "--alias", "x", "y", "--db", "d"]
    assert expand_for_command(root, argv) == ["pool", "scan", "src", "--alias", "x", "--alias", "y", "--db", "d"]
    assert expand_for_command(root, ["evaluate", "--model", "A", "B"]) == ["evaluate", "--model", "A", "B"]


@pytest.mark.parametrize("module", ["click.exceptions", "typer._click.exceptions"])
def test_click_exceptions_of_any_copy(module):
    """typer >= 0.2x raises its vendored ``typer._click`` exceptions, older ones plain click's: both count."""
    exceptions = pytest.importorskip(module)
    assert is_cli_exception(exceptions.NoSuchOption("--bogus"))
    assert is_cli_exception(exceptions.UsageError("Got unexpected extra argument (x)"))
    assert not is_cli_exception(ValueError("x"))
    lines = error_lines(exceptions.UsageError("Missing option '--model'.\nmore"))
    assert lines == ["error: missing option '--model'. more"]


def test_exit_is_recognised():
    import typer

    assert is_exit(typer.Exit(3)) and not is_exit(ValueError())
    if importlib.util.find_spec("click"):
        import click

        assert is_exit(click.exceptions.Exit(1))
