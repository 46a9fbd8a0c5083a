"""Selection: pick k adapters from a pool for a target task (random, evaluation, parameter similarity)."""

from lora_recycle.selection.similarity import (
    SIMILARITIES,
    Similarity,
    abs_cosine,
    clamp_cosine,
    cosine,
    get_similarity,
    inner_product,
    quasi_fim,
    register_similarity,
    similarity_scores,
    squared_norm,
)

__all__ = [
    "SIMILARITIES",
    "Similarity",
    "abs_cosine",
    "clamp_cosine",
    "cosine",
    "get_similarity",
    "inner_product",
    "quasi_fim",
    "register_similarity",
    "similarity_scores",
    "squared_norm",
]
