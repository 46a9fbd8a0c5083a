"""How far a rank-64 cut moves a TIES merge of 30 mixed-rank LoRAs (why dense merges export exactly now).

Random LoRA deltas of SmolLM2-135M's q_proj and up_proj shapes, ranks 4-64, merged by TIES (C = 0.3,
p = 0.6); prints the relative Frobenius error of the old default (``max_rank=64``) and of the exact
export (``max_rank=None``), each checked against the dense merge.
"""

from __future__ import annotations

import argparse

import torch

from lora_recycle.merging.nonadaptive import truncated_factors
from lora_recycle.merging.ties import merge_ties


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--adapters", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(args.seed)
    ranks = [(8, 16, 4, 32, 64, 8, 16, 8, 16, 64)[i % 10] for i in range(args.adapters)]
    for out_features, in_features in ((576, 576), (1536, 576)):
        deltas = [torch.randn(out_features, r, generator=generator) @ torch.randn(r, in_features, generator=generator)
                  / r for r in ranks]
        merged = merge_ties(deltas, torch.full((len(deltas),), 0.3), density=0.4)
        for cap in (64, None):
            A, B, error = truncated_factors(merged, cap)
            check = float((B.double() @ A.double() - merged.double()).norm() / merged.double().norm())
            print(f"{out_features}x{in_features}, {len(deltas)} adapters, max_rank={cap}: export rank {A.shape[0]}, "
                  f"relative error {error:.3f} (dense check {check:.1e})")


if __name__ == "__main__":
    main()
