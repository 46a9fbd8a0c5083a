"""Task arithmetic and TIES merging of dense per-module task vectors (pure maths, one module at a time).

TIES (Yadav et al., 2023) trims each task vector to its largest-magnitude entries, elects a sign per
entry, and averages only the entries that agree with it. The semantics are exactly those of
``peft.utils.merge_utils.ties`` (prune with ``density = 1 - p``, sign elected on the *unweighted*
pruned tensors, weights applied before the disjoint mean), written here so that TIES and DARE share
one combination step: a merge is a sparsifier followed by :func:`merge_pruned`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

MajoritySignMethod = Literal["total", "frequency"]


def check_deltas(deltas: Sequence[torch.Tensor], weights: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Validate ``k`` same-shaped task vectors against ``k`` weights; return the weights as a float64 ``[k]`` tensor."""
    if len(deltas) == 0:
        raise ValueError("no task vectors to merge")
    shape = deltas[0].shape
    if any(delta.shape != shape for delta in deltas):
        raise ValueError(f"task vectors differ in shape: {sorted({tuple(d.shape) for d in deltas})}")
    weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if weights.numel() != len(deltas):
        raise ValueError(f"{len(deltas)} task vectors but {weights.numel()} weights")
    return weights


def magnitude_prune(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``int(density * numel)`` largest-magnitude entries of ``delta`` (any shape), zero the rest.

    ``density >= 1`` keeps everything. Ties in magnitude are broken by ``torch.topk``, as PEFT does.

    >>> magnitude_prune(torch.tensor([0.1, -3.0, 2.0, 0.5]), 0.5)
    tensor([ 0., -3.,  2.,  0.])
    """
    if density < 0:
        raise ValueError(f"density must be >= 0, got {density}")
    if density >= 1:
        return delta
    flat = delta.reshape(-1)
    keep = torch.topk(flat.abs(), k=int(density * flat.numel()), largest=True).indices
    mask = torch.zeros_like(flat)
    mask[keep] = 1
    return (flat * mask).reshape(delta.shape)


def majority_sign(deltas: Sequence[torch.Tensor], method: MajoritySignMethod = "total") -> torch.Tensor:
    """The elected sign (+1 or -1, ties go to +1) per entry of ``k`` same-shaped tensors.

    ``total`` votes with the summed values, ``frequency`` with the count of positive minus negative entries.
    """
    if method not in ("total", "frequency"):
        raise ValueError(f"unknown majority sign method {method!r}; use 'total' or 'frequency'")
    votes = torch.zeros_like(deltas[0])
    for delta in deltas:
        votes += delta if method == "total" else delta.sign()
    return torch.where(votes >= 0, 1.0, -1.0).to(deltas[0].dtype)


def merge_pruned(
    pruned: Sequence[torch.Tensor],
    weights: torch.Tensor | Sequence[float],
    elect_sign: bool,
    majority_sign_method: MajoritySignMethod = "total",
) -> torch.Tensor:
    """Combine already-sparsified task vectors: a weighted sum, or with ``elect_sign`` TIES' disjoint merge.

    The disjoint merge sums ``w_i * pruned_i`` over the tasks whose entry has the elected sign and divides by
    how many tasks agree (at least 1); entries that are zero never agree. Accumulates task by task rather than
    stacking, so peak memory is one extra module-sized tensor or two. Returns a tensor shaped like the inputs.
    """
    weights = check_deltas(pruned, weights)
    merged = torch.zeros_like(pruned[0])
    if not elect_sign:
        for delta, weight in zip(pruned, weights.tolist(), strict=True):
            merged.add_(delta, alpha=weight)
        return merged
    sign = majority_sign(pruned, majority_sign_method)
    agreeing = torch.zeros_like(pruned[0])
    for delta, weight in zip(pruned, weights.tolist(), strict=True):
        agree = delta.sign() == sign
        merged += torch.where(agree, delta * weight, 0.0)
        agreeing += agree
    return merged / agreeing.clamp(min=1.0)


def merge_task_arithmetic(deltas: Sequence[torch.Tensor], weights: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """``sum_i weights[i] * deltas[i]`` for ``k`` same-shaped task vectors (e.g. ``[out, in]``)."""
    return merge_pruned(deltas, weights, elect_sign=False)


def merge_ties(
    deltas: Sequence[torch.Tensor],
    weights: torch.Tensor | Sequence[float],
    density: float,
    majority_sign_method: MajoritySignMethod = "total",
) -> torch.Tensor:
    """TIES merge of ``k`` dense task vectors of one module (each ``[out, in]``); returns ``[out, in]``.

    ``density`` is the fraction of entries each task keeps (the paper's pruning fraction p is ``1 - density``);
    ``weights`` are the per-task coefficients C. Equals ``peft.utils.merge_utils.ties``.
    """
    pruned = [magnitude_prune(delta, density) for delta in deltas]
    return merge_pruned(pruned, weights, elect_sign=True, majority_sign_method=majority_sign_method)
