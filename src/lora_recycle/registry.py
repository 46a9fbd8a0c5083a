"""One registry type for every extension point (merge methods, similarities, task builders, ...).

A read-only mapping from name to item that refuses duplicate names and answers an unknown name
with a one-line UserError suggesting close ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from lora_recycle.errors import UserError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """``name -> item``; ``add`` refuses a taken name, ``lookup`` explains an unknown one."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def remove(self, name: str) -> T:
        """Take a registration back (tests and plugins that registered something temporarily)."""
        return self._items.pop(name)

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@registry.decorator("name")`` registers the decorated object under ``name``."""
        return lambda item: self.add(name, item)

    def lookup(self, name: str) -> T:
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UserError(f"unknown {self.kind} {name!r}{hint}; choose one of: {', '.join(sorted(self._items))}")
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def resolve(target: str | Callable) -> Callable:
    """A callable given directly or as ``"package.module:name"`` (imported on first use, so registries stay light)."""
    if not isinstance(target, str):
        return target
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
