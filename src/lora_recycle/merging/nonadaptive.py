"""Non-adaptive merges over a heterogeneous pool, one module at a time, exported as LoRA factors.

Dense methods (task arithmetic, TIES, DARE) build each module's k dense deltas, merge them, and
factor the result exactly. A low-rank merge (task arithmetic: at most the summed ranks) keeps every
singular value above float32 round-off; an elementwise one (TIES, DARE: pruning and sign election
make the update full-rank) is carried as the dense delta times an identity, with no SVD: the same
rank, exact to the bit. Only an explicit ``max_rank`` cuts the rank (by SVD), and then each module's
relative Frobenius error is reported. Averaging and TSV work on the factors directly and are exact. Adapters without
a module contribute nothing there. A merge method's preset holds its per-module merge
(``merging/module_merge.py``), whose function is one of those below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lora_recycle.adapters.lora import LoraAdapter, LoraModule, union_paths
from lora_recycle.merging.dare import merge_dare_linear, merge_dare_ties
from lora_recycle.merging.module_merge import ModuleMerge
from lora_recycle.merging.ties import merge_task_arithmetic, merge_ties
from lora_recycle.merging.tsv import DEFAULT_KEEP, merge_tsv_factored


# The functions the presets' ModuleMerge entries name: dense ``(deltas, weights, density, generator) -> delta``,
# factored ``(modules, weight) -> LoraModule`` (scale 1).
def dense_task_arithmetic(deltas, weights, density, generator):
    return merge_task_arithmetic(deltas, weights)


def dense_ties(deltas, weights, density, generator):
    return merge_ties(deltas, weights, density)


def dense_dare_linear(deltas, weights, density, generator):
    return merge_dare_linear(deltas, weights, density, generator)


def dense_dare_ties(deltas, weights, density, generator):
    return merge_dare_ties(deltas, weights, density, generator)


def factored_average(modules, weight):
    """Each update times ``weight``, exactly: the factors stacked, each B scaled by ``weight x`` its scale."""
    A = torch.cat([m.A.float() for m in modules])
    B = torch.cat([m.B.float() * (weight * m.scale) for m in modules], dim=1)
    return LoraModule(A, B, 1.0)


def factored_tsv(modules, weight):
    B, A = merge_tsv_factored(modules, keep=DEFAULT_KEEP, weight=weight)
    return LoraModule(A.float(), B.float(), 1.0)


@dataclass
class NonAdaptiveResult:
    """The merged adapter (scale 1 per module) and each module's relative compression error."""

    adapter: LoraAdapter
    errors: dict[str, float] = field(default_factory=dict)

    def error_summary(self) -> dict[str, float]:
        values = list(self.errors.values()) or [0.0]
        return {"max_relative_error": max(values), "mean_relative_error": sum(values) / len(values)}


def numerical_rank(S: torch.Tensor, shape: tuple[int, int]) -> int:
    """How many singular values exceed float32 round-off (numpy's ``matrix_rank`` rule with float32 eps)."""
    if not S.numel() or S[0] <= 0:
        return 0
    tolerance = float(S[0]) * max(shape) * torch.finfo(torch.float32).eps
    return int((tolerance < S).sum())


def truncated_factors(delta: torch.Tensor, max_rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Factors ``(A [q, in], B [out, q])`` of one dense module and the relative Frobenius error.

    ``max_rank=None`` keeps the numerical rank (exact to float32 round-off); a number keeps at most
    that many singular triplets (the best rank-q approximation).
    """
    U, S, Vh = torch.linalg.svd(delta.double(), full_matrices=False)
    q = numerical_rank(S, tuple(delta.shape))
    if max_rank is not None:
        q = min(q, max_rank)
    total = float(S.square().sum())
    error = (float(S[q:].square().sum()) / total) ** 0.5 if total > 0 else 0.0
    root = S[:q].sqrt()
    return (root[:, None] * Vh[:q]).float(), (U[:, :q] * root).float(), error


def dense_factors(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Exact factors of a full-rank module without an SVD: ``(delta, I)`` or ``(I, delta)``, rank min(out, in)."""
    out_features, in_features = delta.shape
    if out_features <= in_features:
        return delta.float().contiguous(), torch.eye(out_features), 0.0
    return torch.eye(in_features), delta.float().contiguous(), 0.0


def merge_nonadaptive(
    adapters: list[LoraAdapter], merge: ModuleMerge, coef: float | None = None, prune: float = 0.6,
    max_rank: int | None = None, seed: int = 0, adapter_id: str = "merged",
) -> NonAdaptiveResult:
    """Merge with fixed coefficients: ``coef`` per adapter (default 1/k), TIES/DARE keep ``1 - prune``.

    The export is exact unless ``max_rank`` is given (see the module docstring).
    """
    fn = merge.function()
    k = len(adapters)
    weight = 1.0 / k if coef is None else float(coef)
    density = 1.0 - prune
    generator = torch.Generator().manual_seed(seed)
    modules: dict[str, LoraModule] = {}
    errors: dict[str, float] = {}
    for path in union_paths(adapters):
        present = [a.modules[path] for a in adapters if path in a.modules]
        if merge.factored:
            modules[path] = fn(present, weight)
            continue
        deltas = [m.delta(torch.float32) for m in present]  # this module only: one dense layer at a time
        merged = fn(deltas, torch.full((len(deltas),), weight), density, generator)
        if bool(merged.any()):
            exact_dense = max_rank is None and not merge.low_rank
            A, B, errors[path] = dense_factors(merged) if exact_dense else truncated_factors(merged, max_rank)
            if A.shape[0]:
                modules[path] = LoraModule(A, B, 1.0)
    return NonAdaptiveResult(LoraAdapter(modules, adapter_id, adapters[0].base_model, {"use_rslora": False}),
                             errors)
