"""The ``lora-recycle`` command line: every user mistake ends as one line on stderr and exit code 2."""

from __future__ import annotations

import sys

import typer

from lora_recycle.errors import UserError

app = typer.Typer(
    name="lora-recycle",
    help="Recycle shared LoRA adapters for a new task: pool, select, merge, export, audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


_registered = False


def _register() -> None:
    # Explicit list of command modules: adding a command group is one import and one line here.
    global _registered
    if _registered:
        return
    _registered = True
    from lora_recycle.cli import core, experiments, hub, pool

    core.register(app)
    experiments.register(app)
    app.add_typer(pool.pool_app, name="pool")
    hub.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code.

    Usage errors of the CLI library (click, or typer's vendored copy of it) and ``UserError`` each end as one
    ``error: ...`` line on stderr (a usage error adds one ``usage:`` line) and exit code 2, never a traceback.
    """
    from lora_recycle.cli import usage
    from lora_recycle.cli.lists import expand_for_command

    _register()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        args = expand_for_command(typer.main.get_command(app), args)
        app(args=args, prog_name="lora-recycle", standalone_mode=False)
    except UserError as exc:
        print(f"error: {usage.one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130
    except Exception as exc:
        if usage.is_help_request(exc):  # a bare group or command: its help, as asked for by no_args_is_help
            print(exc.format_message())
            return 0
        if usage.is_cli_exception(exc):
            print("\n".join(usage.error_lines(exc)), file=sys.stderr)
            return usage.exit_code_of(exc)
        if usage.is_exit(exc):
            return usage.exit_code_of(exc)
        if usage.is_abort(exc):
            print("aborted", file=sys.stderr)
            return 130
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
