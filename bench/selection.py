"""Time similarity-based selection: one target LoRA against a pool of synthetic adapters, factored vs dense.

For each similarity (cosine, quasi_fim, clamp, abs) prints the seconds to score the whole pool with the
library's implementation (factored where exact forms exist; quasi_fim picks factored or dense per module
pair) and with a dense reference that builds both modules' deltas for every pair, plus their ratio and the
largest score difference; then the quasi_fim inner product of the target with one adapter of each rank,
factored vs dense vs the per-module choice. All numbers come from one run, side by side (DESIGN section 8).
Use ``--threads 1`` on a shared machine for steadier numbers. Where freeing large tensors returns memory to
the OS (glibc's mmap threshold), every dense delta page-faults anew and dense timings inflate erratically;
``MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000`` in the environment avoids that. Example:
    .venv/bin/python bench/selection.py --pool 50 --hidden 512 --layers 4
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch

from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.adapters.paths import ATTENTION_TYPES, MODULE_TYPES
from lora_recycle.selection.similarity import SIMILARITIES, quasi_fim_inner

Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DENSE_INNER: dict[str, Combine] = {
    "cosine": lambda x, y: x * y,
    "quasi_fim": lambda x, y: x.square() * y.square(),
    "clamp": lambda x, y: (x * y).clamp_(min=0),
    "abs": lambda x, y: x.abs() * y.abs(),
}


def module_shapes(hidden: int, intermediate: int, layers: int) -> dict[str, tuple[int, int]]:
    """``path -> (out, in)`` for the 7 projections of a Llama-style model (no GQA, for simplicity)."""
    shapes = {}
    for layer in range(layers):
        for name in MODULE_TYPES:
            block = "self_attn" if name in ATTENTION_TYPES else "mlp"
            shape = {"gate_proj": (intermediate, hidden), "up_proj": (intermediate, hidden),
                     "down_proj": (hidden, intermediate)}.get(name, (hidden, hidden))
            shapes[f"model.layers.{layer}.{block}.{name}"] = shape
    return shapes


def synthetic_adapter(shapes: dict[str, tuple[int, int]], rank: int, seed: int) -> LoraAdapter:
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for path, (out_features, in_features) in shapes.items():
        A = torch.randn(rank, in_features, generator=generator) / math.sqrt(in_features)
        B = torch.randn(out_features, rank, generator=generator) * 0.01
        modules[path] = LoraModule(A, B, 16 / rank)
    return LoraAdapter(modules, f"synthetic-{seed}-r{rank}")


def dense_inner(a: LoraAdapter, b: LoraAdapter, combine: Combine) -> float:
    """The reference: build both deltas of every shared module (one module at a time) and reduce densely."""
    total = 0.0
    for path in a.modules.keys() & b.modules.keys():
        total += float(combine(a.modules[path].delta(), b.modules[path].delta()).sum(dtype=torch.float64))
    return total


def dense_scores(name: str, target: LoraAdapter, pool: list[LoraAdapter]) -> list[float]:
    combine = DENSE_INNER[name]
    target_self = dense_inner(target, target, combine if name == "quasi_fim" else DENSE_INNER["cosine"])
    scores = []
    for candidate in pool:
        own = dense_inner(candidate, candidate, combine if name == "quasi_fim" else DENSE_INNER["cosine"])
        scores.append(dense_inner(target, candidate, combine) / math.sqrt(target_self * own))
    return scores


def timed(function: Callable[[], list[float]], repeats: int) -> tuple[float, list[float]]:
    best, result = math.inf, []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=50, help="number of candidate adapters")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1376)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 32, 64], help="pool ranks, cycled")
    parser.add_argument("--target-rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs per timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    shapes = module_shapes(args.hidden, args.intermediate, args.layers)
    target = synthetic_adapter(shapes, args.target_rank, seed=0)
    pool = [synthetic_adapter(shapes, args.ranks[i % len(args.ranks)], seed=i + 1) for i in range(args.pool)]
    print(f"target rank {args.target_rank} vs {args.pool} adapters (ranks {args.ranks}), {len(shapes)} modules, "
          f"hidden {args.hidden}, intermediate {args.intermediate}, {torch.get_num_threads()} threads")
    print(f"{'similarity':<22}{'library s':>11}{'dense s':>10}{'dense/library':>15}{'max |diff|':>12}")

    def row(label: str, library: Callable[[], list[float]], name: str) -> None:
        library_time, library_scores = timed(library, args.repeats)
        dense_time, reference = timed(lambda: dense_scores(name, target, pool), args.repeats)
        diff = max(abs(x - y) for x, y in zip(library_scores, reference, strict=True))
        print(f"{label:<22}{library_time:>11.3f}{dense_time:>10.3f}{dense_time / library_time:>15.2f}{diff:>12.1e}")

    for name, similarity in SIMILARITIES.items():
        row(name, lambda s=similarity: list(s.scores(target, pool)), name)

    # quasi_fim per candidate rank: where the rank r(r+1)/2 factored form stops paying off
    print(f"\nquasi_fim inner product, target rank {args.target_rank} vs one adapter of each rank (ms per pair)")
    print(f"{'rank':>6}{'factored':>11}{'dense':>10}{'auto':>10}{'dense/factored':>16}")
    for rank in sorted(set(args.ranks)):
        candidate = synthetic_adapter(shapes, rank, seed=1000 + rank)
        times = {method: timed(lambda m=method, c=candidate: [quasi_fim_inner(target, c, m)], args.repeats)[0] * 1e3
                 for method in ("factored", "dense", "auto")}
        print(f"{rank:>6}{times['factored']:>11.1f}{times['dense']:>10.1f}{times['auto']:>10.1f}"
              f"{times['dense'] / times['factored']:>16.2f}")

if __name__ == "__main__":
    main()
