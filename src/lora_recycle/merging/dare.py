"""DARE merging (Yu et al., 2024): drop task-vector entries at random, rescale the survivors, then combine.

Each entry survives with probability ``density`` and survivors are divided by ``density`` so the pruned
task vector equals the original in expectation. The rescaled tensor is what gets merged (the authors'
research code computed the rescale and then discarded it). Randomness comes only from the ``generator``
passed in, so a seed gives the same merge every time. ``dare_linear`` sums the rescaled task vectors with
their weights; ``dare_ties`` combines them with TIES' sign election and disjoint mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lora_recycle.merging.ties import MajoritySignMethod, merge_pruned


def random_drop(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """``delta * mask / density`` with ``mask ~ Bernoulli(density)`` per entry; ``density >= 1`` keeps everything.

    Draws one Bernoulli tensor shaped like ``delta`` from ``generator`` (the same draw PEFT's ``random_pruning``
    makes from the global generator).
    """
    if not density > 0:
        raise ValueError(f"DARE density must be > 0 (the keep probability), got {density}")
    if density >= 1:
        return delta
    mask = torch.bernoulli(torch.full_like(delta, density), generator=generator)
    return delta * mask / density


def merge_dare_linear(
    deltas: Sequence[torch.Tensor],
    weights: torch.Tensor | Sequence[float],
    density: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """``sum_i weights[i] * random_drop(deltas[i])`` for ``k`` task vectors of one module; returns ``[out, in]``.

    Masks are drawn in task order from ``generator``; in expectation this is the undropped weighted sum.
    """
    dropped = [random_drop(delta, density, generator) for delta in deltas]
    return merge_pruned(dropped, weights, elect_sign=False)


def merge_dare_ties(
    deltas: Sequence[torch.Tensor],
    weights: torch.Tensor | Sequence[float],
    density: float,
    generator: torch.Generator,
    majority_sign_method: MajoritySignMethod = "total",
) -> torch.Tensor:
    """TIES' sign election and disjoint mean over the randomly dropped and rescaled task vectors; ``[out, in]``."""
    dropped = [random_drop(delta, density, generator) for delta in deltas]
    return merge_pruned(dropped, weights, elect_sign=True, majority_sign_method=majority_sign_method)
