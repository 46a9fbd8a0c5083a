"""Factored similarities against dense references on adapters with mixed ranks and module sets."""

from __future__ import annotations

import pytest
import torch

from lora_recycle.adapters.lora import LoraAdapter, LoraModule, union_paths
from lora_recycle.errors import UserError
from lora_recycle.selection.similarity import (
    SIMILARITIES,
    abs_cosine,
    clamp_cosine,
    cosine,
    get_similarity,
    inner_product,
    module_quasi_fim_inner,
    normalised,
    quasi_fim,
    quasi_fim_costs,
    quasi_fim_inner,
    quasi_fim_squared_norm,
    register_similarity,
    similarity_scores,
    square_factors,
    squared_norm,
)

SHAPES = {"q_proj": (32, 32), "v_proj": (16, 32), "up_proj": (48, 32), "down_proj": (32, 48)}
PATHS = {
    f"model.layers.{layer}.{'self_attn' if name.endswith(('q_proj', 'v_proj')) else 'mlp'}.{name}": shape
    for layer in range(2) for name, shape in SHAPES.items()
}


def random_adapter(seed: int, ranks: tuple[int, ...] = (2, 4, 8), drop: float = 0.3) -> LoraAdapter:
    """An adapter on a random subset of PATHS, each module with a random rank from ``ranks`` and alpha 16."""
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for path, (out_features, in_features) in PATHS.items():
        if torch.rand((), generator=generator) < drop:
            continue
        rank = ranks[int(torch.randint(len(ranks), (), generator=generator))]
        A = torch.randn(rank, in_features, generator=generator) * 0.1
        B = torch.randn(out_features, rank, generator=generator) * 0.1
        modules[path] = LoraModule(A, B, 16 / rank)
    return LoraAdapter(modules, f"adapter-{seed}")


def dense_vector(adapter: LoraAdapter, paths: list[str]) -> torch.Tensor:
    """The concatenated task vector in float64, zeros where the adapter lacks a module."""
    parts = []
    for path in paths:
        module = adapter.modules.get(path)
        delta = module.delta(torch.float64) if module else torch.zeros(PATHS[path], dtype=torch.float64)
        parts.append(delta.reshape(-1))
    return torch.cat(parts)


def dense_cos(x: torch.Tensor, y: torch.Tensor, numerator: torch.Tensor | None = None) -> float:
    top = (x * y).sum() if numerator is None else numerator
    return float(top / (x.norm() * y.norm()))


def dense_references(a: LoraAdapter, b: LoraAdapter) -> dict[str, float]:
    paths = union_paths([a, b])
    x, y = dense_vector(a, paths), dense_vector(b, paths)
    return {
        "cosine": dense_cos(x, y),
        "quasi_fim": dense_cos(x.square(), y.square()),
        "clamp": dense_cos(x, y, (x * y).clamp(min=0).sum()),
        "abs": dense_cos(x.abs(), y.abs()),
    }


PAIRS = [(0, 1), (2, 3), (4, 5)]


@pytest.mark.parametrize(("seed_a", "seed_b"), PAIRS)
def test_similarities_equal_dense_references(seed_a, seed_b):
    a, b = random_adapter(seed_a, ranks=(1, 3, 8, 16)), random_adapter(seed_b, ranks=(2, 5, 12))
    assert a.modules.keys() != b.modules.keys()  # mixed module sets
    expected = dense_references(a, b)
    for name in ("cosine", "quasi_fim", "clamp", "abs"):
        assert SIMILARITIES[name](a, b) == pytest.approx(expected[name], abs=1e-5), name
    factored = normalised(quasi_fim_inner(a, b, "factored"), quasi_fim_squared_norm(a, "factored"),
                          quasi_fim_squared_norm(b, "factored"))
    assert factored == pytest.approx(expected["quasi_fim"], abs=1e-5)
    assert cosine(a, b) == SIMILARITIES["cosine"](a, b)
    assert quasi_fim(a, b) == SIMILARITIES["quasi_fim"](a, b)
    assert clamp_cosine(a, b) == SIMILARITIES["clamp"](a, b)
    assert abs_cosine(a, b) == SIMILARITIES["abs"](a, b)


def test_correlated_adapters_are_scored_exactly():
    # a shares half its modules' factors with b, so the similarities are far from zero
    a, b = random_adapter(7), random_adapter(8, drop=0.0)
    for path in list(a.modules)[::2]:
        a.modules[path] = b.modules[path]
    expected = dense_references(a, b)
    for name, value in expected.items():
        assert SIMILARITIES[name](a, b) == pytest.approx(value, abs=1e-5), name
    assert expected["cosine"] > 0.3


def test_inner_products_and_norms():
    a, b = random_adapter(10), random_adapter(11)
    paths = union_paths([a, b])
    x, y = dense_vector(a, paths), dense_vector(b, paths)
    assert inner_product(a, b) == pytest.approx(float(x @ y), rel=1e-5, abs=1e-6)
    assert squared_norm(a) == pytest.approx(float(x @ x), rel=1e-5)
    assert quasi_fim_inner(a, b) == pytest.approx(float(x.square() @ y.square()), rel=1e-5, abs=1e-8)
    # plain dicts of modules work as well as adapters
    assert inner_product(a.modules, b.modules) == inner_product(a, b)


@pytest.mark.parametrize("method", ["factored", "dense"])
def test_quasi_fim_methods_agree(method):
    a, b = random_adapter(12, ranks=(3, 6)), random_adapter(13, ranks=(4, 7))
    expected = quasi_fim_inner(a, b, method="dense" if method == "factored" else "factored", dtype=torch.float64)
    assert quasi_fim_inner(a, b, method=method) == pytest.approx(expected, rel=1e-5)


def test_square_factors_reproduce_the_elementwise_square():
    generator = torch.Generator().manual_seed(0)
    A, B = torch.randn(5, 9, generator=generator, dtype=torch.float64), torch.randn(7, 5, generator=generator,
                                                                                      dtype=torch.float64)
    A2, B2 = square_factors(A, B)
    assert A2.shape == (15, 9) and B2.shape == (7, 15)
    torch.testing.assert_close(B2 @ A2, (B @ A).square())


def test_quasi_fim_picks_factored_only_for_small_ranks():
    def choice(rank: int) -> str:
        costs = quasi_fim_costs(rank, rank, 512, 512)
        return min(costs, key=costs.__getitem__)

    assert choice(4) == "factored"
    assert choice(64) == "dense"
    small = LoraModule(torch.randn(2, 8), torch.randn(8, 2), 1.0)
    assert module_quasi_fim_inner(small, small) == pytest.approx(float(small.delta().pow(4).sum()), rel=1e-5)


@pytest.mark.parametrize("name", ["cosine", "quasi_fim", "clamp", "abs"])
def test_symmetric_and_self_similarity(name):
    a, b = random_adapter(20), random_adapter(21)
    similarity = SIMILARITIES[name]
    assert similarity(a, b) == pytest.approx(similarity(b, a), abs=1e-6)
    copy = LoraAdapter({path: LoraModule(m.A.clone(), m.B.clone(), m.scale) for path, m in a.modules.items()})
    assert similarity(a, copy) == pytest.approx(1.0, abs=1e-5)
    assert similarity(a, a) == pytest.approx(1.0, abs=1e-6)
    assert -1.0 - 1e-6 <= similarity(a, b) <= 1.0 + 1e-6


def test_disjoint_and_zero_adapters_score_zero():
    a = random_adapter(30)
    other = {path: m for path, m in random_adapter(31, drop=0.0).modules.items() if path not in a.modules}
    assert cosine(a, other) == 0.0
    zero = {path: LoraModule(m.A, torch.zeros_like(m.B), m.scale) for path, m in a.modules.items()}
    assert quasi_fim(a, zero) == 0.0 and cosine(a, LoraAdapter({})) == 0.0


def test_shape_mismatch_is_an_error():
    path = next(iter(PATHS))
    a = {path: LoraModule(torch.randn(2, 32), torch.randn(32, 2), 1.0)}
    b = {path: LoraModule(torch.randn(2, 16), torch.randn(32, 2), 1.0)}
    with pytest.raises(ValueError, match="shapes differ"):
        cosine(a, b)


def test_pool_scores_match_pairwise():
    target = random_adapter(40)
    pool = {f"p{i}": random_adapter(41 + i) for i in range(4)}
    scores = similarity_scores("quasi_fim", target, pool, pool.__getitem__)
    assert list(scores) == list(pool)
    for adapter_id, score in scores.items():
        assert score == pytest.approx(quasi_fim(target, pool[adapter_id]), abs=1e-9)


def test_registry_refuses_duplicates_and_suggests_names():
    with pytest.raises(ValueError, match="already registered"):
        register_similarity("cosine", self_inner=squared_norm)(inner_product)
    with pytest.raises(UserError, match="quasi_fim"):
        get_similarity("quasi-fim")
    assert set(SIMILARITIES) >= {"cosine", "quasi_fim", "clamp", "abs"}
