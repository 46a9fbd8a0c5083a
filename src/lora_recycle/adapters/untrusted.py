"""Bounded parsing of files written by strangers: size caps, nesting caps, no YAML aliases.

Everything an adapter directory holds (``adapter_config.json``, the model card, a safetensors header)
is parsed here, so a tiny hostile file cannot cost unbounded memory or time: JSON is checked for
nesting depth after a capped read, and YAML is composed by a loader that refuses aliases
("billion laughs") and deep nesting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lora_recycle.errors import UserError

MAX_CONFIG_BYTES = 2 * 1024 * 1024  # adapter configs are a few KB; huge rank_patterns stay far below this
MAX_CARD_BYTES = 128 * 1024  # the YAML front matter of a model card (the Markdown body is never parsed)
MAX_DEPTH = 32  # PEFT configs nest 3 levels, cards rarely more than 6



class AdapterProblem(UserError):
    """A problem with an adapter's files that maps to a pool rejection ``code`` (and a one-line CLI error)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def nesting_depth(value: Any) -> int:
    """Deepest list/dict nesting of a parsed JSON or YAML value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def loads_json(raw: bytes, where: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse capped JSON bytes and refuse deep nesting; ``corrupt`` AdapterProblem on any failure.

    The C decoder raises RecursionError (it never overflows the stack) on hostile nesting.
    """
    try:
        value = json.loads(raw.decode("utf-8-sig"))
    except RecursionError:
        raise AdapterProblem("corrupt", f"{where}: JSON nested too deeply (limit {max_depth})") from None
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: bad JSON, or an integer of 5000 digits
        raise AdapterProblem("corrupt", f"{where}: invalid JSON ({type(exc).__name__}: {exc})") from None
    depth = nesting_depth(value)
    if depth > max_depth:
        raise AdapterProblem("corrupt", f"{where}: JSON nested {depth} levels deep (limit {max_depth})")
    return value


def read_capped(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of ``path``, refusing files above ``max_bytes`` without reading them whole."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise AdapterProblem("corrupt", f"{path}: unreadable ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise AdapterProblem("corrupt", f"{path}: {what} larger than the {max_bytes}-byte limit")
    return data


def read_json_file(path: Path, max_bytes: int = MAX_CONFIG_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a small untrusted JSON file (size- and depth-capped)."""
    return loads_json(read_capped(Path(path), max_bytes, "JSON file"), str(path), max_depth)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and with a nesting cap (composition is the recursive step)."""

    max_depth = MAX_DEPTH

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(_alias_message(event))
        depth = getattr(self, "_depth", 0)
        if depth >= self.max_depth:
            raise _Refused(_depth_message(self.max_depth))
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth


class _Refused(Exception):
    pass


def _alias_message(event: yaml.AliasEvent) -> str:
    return f"YAML alias *{event.anchor} (aliases are not allowed)"


def _depth_message(max_depth: int) -> str:
    return f"YAML nested deeper than {max_depth} levels"


_LIBYAML = getattr(yaml, "CSafeLoader", None)  # PyYAML built with libyaml: ~10x faster than the pure-Python parser


def _check_events(text: str, max_depth: int) -> None:
    """Refuse an alias, or a node nested ``max_depth`` collections deep, from libyaml's event stream (read
    lazily, so a deep or aliased document stops at the first offending event, before anything is built)."""
    level = 0
    try:
        for event in yaml.parse(text, Loader=_LIBYAML):
            if isinstance(event, yaml.AliasEvent):
                raise _Refused(_alias_message(event))
            if isinstance(event, yaml.NodeEvent):
                if level >= max_depth:
                    raise _Refused(_depth_message(max_depth))
                if isinstance(event, yaml.CollectionStartEvent):
                    level += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                level -= 1
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):  # libyaml's scanner looks ahead and stops at its own cap (1,000)
            raise _Refused(_depth_message(max_depth)) from None
        raise


def loads_yaml(text: str, where: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse untrusted YAML with the safe loader, no aliases and at most ``max_depth`` levels.

    With libyaml the limits are checked on its event stream and the document then built by its safe loader;
    without it, by a pure-Python safe loader that checks them as it composes. A syntax error raises
    ``yaml.YAMLError`` as usual; refused structure raises a ``bad_card`` AdapterProblem.
    """
    try:
        if _LIBYAML is not None:
            _check_events(text, max_depth)
            return yaml.load(text, Loader=_LIBYAML)  # noqa: S506 - CSafeLoader: the safe constructor
        loader = _BoundedLoader(text)
        loader.max_depth = max_depth
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _Refused as exc:
        raise AdapterProblem("bad_card", f"{where}: {exc}") from None
    except RecursionError:
        raise AdapterProblem("bad_card", f"{where}: YAML nested too deeply") from None
