"""Read user-supplied YAML and JSON files: any parse problem is a one-line UserError naming file and line.

Files are UTF-8, with or without the byte-order mark some editors (and PowerShell) write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lora_recycle.errors import UserError


def read_yaml(path: Path) -> Any:
    """The parsed YAML document at ``path`` (safe loader); ``path:line: invalid YAML`` on a syntax error."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: invalid YAML") from None


def read_json(path: Path) -> Any:
    """The parsed JSON document at ``path``; ``path: invalid JSON (...)`` on a syntax or encoding error."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: invalid JSON ({exc})") from None
