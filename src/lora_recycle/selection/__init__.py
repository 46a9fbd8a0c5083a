"""Selection: pick k adapters from a pool for a target task (random, evaluation, parameter similarity).

The strategies are listed in ``selection/strategies.py``; the similarity maths is re-exported here
lazily, so importing the registry stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_SIMILARITY_NAMES = (
    "SIMILARITIES", "Similarity", "abs_cosine", "clamp_cosine", "cosine", "get_similarity", "inner_product",
    "quasi_fim", "register_similarity", "similarity_scores", "squared_norm",
)
__all__ = list(_SIMILARITY_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _SIMILARITY_NAMES:
        raise AttributeError(f"module 'lora_recycle.selection' has no attribute {name!r}")
    return getattr(importlib.import_module("lora_recycle.selection.similarity"), name)
