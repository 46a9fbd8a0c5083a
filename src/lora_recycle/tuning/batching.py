"""Length-bucketed batch orders: each batch holds sequences of similar length, so padding stays small."""

from __future__ import annotations

import torch


def bucketed_batch_order(lengths: list[int], batch_size: int, steps: int, seed: int,
                         window: int = 4) -> list[list[int]]:
    """Indices of each step's examples: seeded epochs, each cut into windows of ``window`` batches whose
    rows are sorted by length before batching; batch order is then shuffled within the epoch.

    Every example is seen once per epoch (as with plain shuffling), and ``steps`` batches come out.
    """
    n = len(lengths)
    if n == 0:
        raise ValueError("no training examples")
    size = max(1, min(batch_size, n))
    generator = torch.Generator().manual_seed(seed)
    batches: list[list[int]] = []
    while len(batches) < steps:
        perm = torch.randperm(n, generator=generator).tolist()
        epoch = []
        for start in range(0, n, size * window):
            chunk = sorted(perm[start : start + size * window], key=lambda i: lengths[i])  # stable: ties stay random
            epoch += [chunk[i : i + size] for i in range(0, len(chunk), size)]
        shuffled = torch.randperm(len(epoch), generator=generator).tolist()
        batches += [epoch[i] for i in shuffled]
    return batches[:steps]


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    """Fraction of the padded token grid that is padding, over ``batches``."""
    grid = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return 1.0 - real / grid if grid else 0.0
