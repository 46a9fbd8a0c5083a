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
    """Entry point of the console script; returns the process exit code."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
