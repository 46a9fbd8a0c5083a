"""Parameter-space similarity between LoRA adapters (DESIGN sections 4 and 8), exact and mostly factored.

An adapter's task vector is the concatenation of its modules' ``scale * B @ A``; a module one adapter lacks
counts as zeros. Every similarity here is a normalised inner product
``inner(a, b) / sqrt(inner(a, a) * inner(b, b))`` (0 when either side is zero):

- ``cosine``: ``<B1 A1, B2 A2> = sum((B1^T B2) * (A1 A2^T))``, ``2 r1 r2 (n + m)`` flops per module instead of
  the dense ``2 n m (r1 + r2)``; never builds a delta.
- ``quasi_fim``: cosine of the elementwise squares. ``(B A) o (B A) = (B ⊙ B)(A ⊙ A)`` where ``B ⊙ B`` has
  columns ``c_ij b_i * b_j`` for ``i <= j`` (``c_ii = 1``, ``c_ij = 2``) and ``A ⊙ A`` rows ``a_i * a_j``:
  rank ``r (r + 1) / 2``, so the factored form only wins for small ranks; each module pair picks the cheaper
  of that and a dense fallback (one module's two deltas) from a cost model, :func:`quasi_fim_costs`.
- ``clamp``: cosine with negative elementwise products clamped to zero in the inner product; ``abs``: cosine of
  elementwise absolute values. Neither has a factored form: each builds one module's two deltas at a time.
  Their self inner products are plain squared norms, computed factored.

Each similarity is registered by name in :data:`SIMILARITIES`; :func:`similarity_scores` scores a pool
against a target, loading one candidate at a time and computing the target's self inner product once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.registry import Registry

AdapterLike = LoraAdapter | Mapping[str, LoraModule]
Inner = Callable[[AdapterLike, AdapterLike], float]
SelfInner = Callable[[AdapterLike], float]
QuasiFimMethod = Literal["auto", "factored", "dense"]
COMPUTE_DTYPE = torch.float32
# One memory-bound elementwise operation costs about as much as this many matrix-product flops
# (fitted to factored-vs-dense quasi-FIM timings on a 2-core CPU; see bench/selection.py).
ELEMENTWISE_COST = 16


def _modules(adapter: AdapterLike) -> Mapping[str, LoraModule]:
    return adapter.modules if isinstance(adapter, LoraAdapter) else adapter


def _common_modules(a: AdapterLike, b: AdapterLike) -> Iterator[tuple[str, LoraModule, LoraModule]]:
    """``(path, module of a, module of b)`` for every path both adapters have; others contribute zero."""
    modules_a, modules_b = _modules(a), _modules(b)
    for path in sorted(modules_a.keys() & modules_b.keys()):
        ma, mb = modules_a[path], modules_b[path]
        if (ma.out_features, ma.in_features) != (mb.out_features, mb.in_features):
            raise ValueError(f"{path}: shapes differ, {(ma.out_features, ma.in_features)} and "
                             f"{(mb.out_features, mb.in_features)}")
        yield path, ma, mb


def _factored_inner(A1: torch.Tensor, B1: torch.Tensor, A2: torch.Tensor, B2: torch.Tensor) -> float:
    """``<B1 @ A1, B2 @ A2>_F = sum((B1^T B2) * (A1 A2^T))`` for ``A [r, in]``, ``B [out, r]``; summed in float64."""
    return float(((B1.T @ B2) * (A1 @ A2.T)).sum(dtype=torch.float64))


def _factors(module: LoraModule, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return module.A.to(dtype), module.B.to(dtype)


def _product(module: LoraModule, dtype: torch.dtype) -> torch.Tensor:
    """A fresh dense ``B @ A`` (scale not applied), so callers can work in place and skip extra allocations."""
    A, B = _factors(module, dtype)
    return B @ A


# --- cosine -------------------------------------------------------------------------------------------------


def module_inner_product(ma: LoraModule, mb: LoraModule, dtype: torch.dtype = COMPUTE_DTYPE) -> float:
    """``<ma.delta(), mb.delta()>_F`` of two modules of the same shape, in factored form."""
    return ma.scale * mb.scale * _factored_inner(*_factors(ma, dtype), *_factors(mb, dtype))


def inner_product(a: AdapterLike, b: AdapterLike, dtype: torch.dtype = COMPUTE_DTYPE) -> float:
    """The Frobenius inner product of two adapters' concatenated task vectors, never building a delta."""
    return sum((module_inner_product(ma, mb, dtype) for _, ma, mb in _common_modules(a, b)), 0.0)


def squared_norm(a: AdapterLike, dtype: torch.dtype = COMPUTE_DTYPE) -> float:
    """``||task vector||_F^2`` of an adapter, in factored form (worth caching per adapter)."""
    return sum((module_inner_product(m, m, dtype) for m in _modules(a).values()), 0.0)


# --- quasi-FIM (elementwise squares) ------------------------------------------------------------------------


def square_factors(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of the elementwise square: ``(B @ A) ** 2 == B2 @ A2``, rank ``r (r + 1) / 2``.

    ``A [r, in]``, ``B [out, r]`` -> ``(A2 [R, in], B2 [out, R])``, ``R = r (r + 1) / 2``: row-wise Khatri-Rao
    products over pairs ``i <= j``, with the cross terms (``i < j``) counted twice on the ``B`` side.
    """
    i, j = torch.triu_indices(A.shape[0], A.shape[0], device=A.device)
    twice = torch.where(i == j, 1.0, 2.0).to(B.dtype)
    Bt = B.T.contiguous()  # gathering whole rows is much faster than gathering columns
    B2t = Bt.index_select(0, i).mul_(Bt.index_select(0, j)).mul_(twice[:, None])
    return A.index_select(0, i).mul_(A.index_select(0, j)), B2t.T


def quasi_fim_costs(rank_a: int, rank_b: int, out_features: int, in_features: int) -> dict[str, float]:
    """Approximate cost of ``<delta_a ** 2, delta_b ** 2>`` for one module pair: ``factored`` vs ``dense``.

    Matrix-product flops plus memory-bound elementwise work (building the Khatri-Rao factors; squaring and
    multiplying the dense deltas) weighted by :data:`ELEMENTWISE_COST`. For two equal ranks the factored form is
    chosen up to rank 12 on a 512 x 512 module and up to rank 20 on 2048 x 2048.
    """
    Ra, Rb = rank_a * (rank_a + 1) / 2, rank_b * (rank_b + 1) / 2
    n, m = out_features, in_features
    return {"factored": 2 * Ra * Rb * (n + m) + ELEMENTWISE_COST * (Ra + Rb) * (n + m),
            "dense": 2 * n * m * (rank_a + rank_b) + ELEMENTWISE_COST * n * m}


def module_quasi_fim_inner(
    ma: LoraModule, mb: LoraModule, method: QuasiFimMethod = "auto", dtype: torch.dtype = COMPUTE_DTYPE
) -> float:
    """``<ma.delta() ** 2, mb.delta() ** 2>_F``: factored, dense (two deltas of this module), or the cheaper."""
    if method == "auto":
        costs = quasi_fim_costs(ma.rank, mb.rank, ma.out_features, ma.in_features)
        method = min(costs, key=costs.__getitem__)
    if method == "factored":
        A2a, B2a = square_factors(*_factors(ma, dtype))
        A2b, B2b = (A2a, B2a) if mb is ma else square_factors(*_factors(mb, dtype))
        return (ma.scale * mb.scale) ** 2 * _factored_inner(A2a, B2a, A2b, B2b)
    if method == "dense":
        square_a = _product(ma, dtype).square_()
        square_b = square_a if mb is ma else _product(mb, dtype).square_()
        return (ma.scale * mb.scale) ** 2 * float(square_a.mul_(square_b).sum(dtype=torch.float64))
    raise ValueError(f"unknown quasi-FIM method {method!r}; use 'auto', 'factored' or 'dense'")


def quasi_fim_inner(
    a: AdapterLike, b: AdapterLike, method: QuasiFimMethod = "auto", dtype: torch.dtype = COMPUTE_DTYPE
) -> float:
    """``<a ** 2, b ** 2>`` over the adapters' concatenated task vectors (elementwise squares)."""
    return sum((module_quasi_fim_inner(ma, mb, method, dtype) for _, ma, mb in _common_modules(a, b)), 0.0)


def quasi_fim_squared_norm(
    a: AdapterLike, method: QuasiFimMethod = "auto", dtype: torch.dtype = COMPUTE_DTYPE
) -> float:
    """``||a ** 2||_F^2``, the sum of the fourth powers of an adapter's task vector."""
    return sum((module_quasi_fim_inner(m, m, method, dtype) for m in _modules(a).values()), 0.0)


# --- clamp and abs (dense, one module at a time) ------------------------------------------------------------


def clamped_inner_product(a: AdapterLike, b: AdapterLike, dtype: torch.dtype = COMPUTE_DTYPE) -> float:
    """``sum(max(a * b, 0))`` over the concatenated task vectors (dense per module, one module at a time)."""
    total = 0.0
    for _, ma, mb in _common_modules(a, b):
        # the scales go inside the clamp: a negative scale (alpha < 0) flips which products are negative
        product = _product(ma, dtype).mul_(_product(mb, dtype)).mul_(ma.scale * mb.scale)
        total += float(product.clamp_(min=0).sum(dtype=torch.float64))
    return total


def absolute_inner_product(a: AdapterLike, b: AdapterLike, dtype: torch.dtype = COMPUTE_DTYPE) -> float:
    """``<|a|, |b|>`` over the concatenated task vectors (dense per module, one module at a time)."""
    total = 0.0
    for _, ma, mb in _common_modules(a, b):
        product = _product(ma, dtype).abs_().mul_(_product(mb, dtype).abs_())
        total += abs(ma.scale * mb.scale) * float(product.sum(dtype=torch.float64))
    return total


# --- registry -----------------------------------------------------------------------------------------------


def normalised(inner: float, self_inner_a: float, self_inner_b: float) -> float:
    """``inner / sqrt(self_a * self_b)``, or 0.0 when either adapter is zero."""
    denominator = math.sqrt(max(self_inner_a, 0.0) * max(self_inner_b, 0.0))
    return inner / denominator if denominator > 0 else 0.0


@dataclass(frozen=True)
class Similarity:
    """A named similarity: ``inner(a, b) / sqrt(self_inner(a) * self_inner(b))``; calling it scores a pair."""

    name: str
    inner: Inner
    self_inner: SelfInner

    def __call__(self, a: AdapterLike, b: AdapterLike) -> float:
        if a is b:
            own = self.self_inner(a)
            return normalised(own, own, own)
        return normalised(self.inner(a, b), self.self_inner(a), self.self_inner(b))

    def scores(self, target: AdapterLike, candidates: Iterable[AdapterLike]) -> Iterator[float]:
        """The similarity of each candidate to ``target``, in order; the target's self inner is computed once."""
        target_self = self.self_inner(target)
        for candidate in candidates:
            yield normalised(self.inner(target, candidate), target_self, self.self_inner(candidate))


SIMILARITIES: Registry[Similarity] = Registry("similarity")


def register_similarity(name: str, self_inner: SelfInner) -> Callable[[Inner], Inner]:
    """Decorator registering an inner product as the similarity ``name``; refuses a name already taken."""

    def decorator(inner: Inner) -> Inner:
        SIMILARITIES.add(name, Similarity(name, inner, self_inner))
        return inner

    return decorator


def get_similarity(name: str) -> Similarity:
    """The registered similarity ``name``; an unknown name gets a one-line error suggesting close ones."""
    return SIMILARITIES.lookup(name)


register_similarity("cosine", self_inner=squared_norm)(inner_product)
register_similarity("quasi_fim", self_inner=quasi_fim_squared_norm)(quasi_fim_inner)
register_similarity("clamp", self_inner=squared_norm)(clamped_inner_product)
register_similarity("abs", self_inner=squared_norm)(absolute_inner_product)


def cosine(a: AdapterLike, b: AdapterLike) -> float:
    """Cosine similarity of two adapters' concatenated task vectors (exact, factored)."""
    return SIMILARITIES["cosine"](a, b)


def quasi_fim(a: AdapterLike, b: AdapterLike) -> float:
    """Cosine similarity of the elementwise squares (each LoRA as one pseudo-gradient step; exact)."""
    return SIMILARITIES["quasi_fim"](a, b)


def clamp_cosine(a: AdapterLike, b: AdapterLike) -> float:
    """Cosine with negative elementwise products clamped to zero in the numerator."""
    return SIMILARITIES["clamp"](a, b)


def abs_cosine(a: AdapterLike, b: AdapterLike) -> float:
    """Cosine similarity of the elementwise absolute values."""
    return SIMILARITIES["abs"](a, b)


def similarity_scores(
    name: str, target: AdapterLike, adapter_ids: Iterable[str], load: Callable[[str], AdapterLike]
) -> dict[str, float]:
    """``{adapter id: similarity to target}``, loading one candidate adapter at a time."""
    ids = list(adapter_ids)
    similarity = get_similarity(name)
    return dict(zip(ids, similarity.scores(target, (load(i) for i in ids)), strict=True))


def strategy_scores(name: str, inputs, ids: list[str]) -> dict[str, float]:
    """A similarity selection strategy's scores: the registered similarity ``name`` to the target LoRA."""
    return similarity_scores(name, inputs.target, ids, inputs.load)
