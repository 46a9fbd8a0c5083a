"""Turn per-adapter scores into a selection (shared by evaluation and similarity strategies)."""

from __future__ import annotations


def top_k(scores: dict[str, float], k: int) -> list[str]:
    """The k best ids, ties broken by id so the choice is deterministic."""
    return [i for i, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]]
