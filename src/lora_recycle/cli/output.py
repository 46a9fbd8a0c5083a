"""How commands print: JSON on stdout for machines, a rich table on stderr/stdout for people."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from lora_recycle.escaping import printable
from lora_recycle.progress import quiet_option
from lora_recycle.serialization import json_safe

# The commands that train, merge or score draw progress bars on stderr (even piped); --quiet turns them off.
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", callback=quiet_option,
                                        help="No progress bars on stderr (results and errors still print).")]


def emit_json(data) -> None:
    """Print one JSON document on stdout (NaN becomes null, so the output is strict JSON)."""
    sys.stdout.write(json.dumps(json_safe(data), indent=2, default=str) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    """A progress or status line for people, on stderr so stdout stays machine-readable (control characters of
    adapter ids in it escaped)."""
    print(printable(message), file=sys.stderr, flush=True)
