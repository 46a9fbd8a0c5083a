"""Package namespaces whose names load on first use (PEP 562), so importing a package stays cheap.

``lora_recycle.pool`` re-exports the scanner and loaders, which need torch; ``pool list`` needs only the
catalog. With lazy names, ``from lora_recycle.pool.catalog import Catalog`` (or ``from lora_recycle.pool import
Catalog``) imports what it names and nothing else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_namespace(package: str, exports: dict[str, str],
                   namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each name of ``exports`` (name -> defining module) is imported
    on first access and then kept in the package's ``namespace`` (its ``globals()``)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
