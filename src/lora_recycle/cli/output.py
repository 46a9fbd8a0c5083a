"""How commands print: JSON on stdout for machines, a rich table on stderr/stdout for people."""

from __future__ import annotations

import json
import math
import sys


def _clean(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def emit_json(data) -> None:
    """Print one JSON document on stdout (NaN becomes null, so the output is strict JSON)."""
    sys.stdout.write(json.dumps(_clean(data), indent=2, default=str) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    """A progress or status line for people, on stderr so stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)
