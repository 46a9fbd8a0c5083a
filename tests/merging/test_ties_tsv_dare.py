"""TIES, task arithmetic, DARE and TSV against PEFT's merge utilities and independent dense references."""

from __future__ import annotations

import pytest
import torch
from peft.utils import merge_utils

from lora_recycle.adapters.lora import LoraModule
from lora_recycle.merging.dare import merge_dare_linear, merge_dare_ties, random_drop
from lora_recycle.merging.ties import magnitude_prune, merge_task_arithmetic, merge_ties
from lora_recycle.merging.tsv import merge_tsv_dense, merge_tsv_factored

K = 5


def random_deltas(seed: int, k: int = K, shape: tuple[int, int] = (24, 40), ties: bool = False) -> list[torch.Tensor]:
    """k random task vectors; with ``ties`` small integers, so magnitudes repeat and sign votes can be exactly 0."""
    generator = torch.Generator().manual_seed(seed)
    if ties:
        return [torch.randint(-3, 4, shape, generator=generator).float() for _ in range(k)]
    return [torch.randn(shape, generator=generator) for _ in range(k)]


# --- TIES and task arithmetic ----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("p", [0.0, 0.2, 0.4, 0.6])
@pytest.mark.parametrize("coefficient", [1.0, 0.3, 1 / K])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("method", ["total", "frequency"])
def test_ties_equals_peft(p, coefficient, ties, method):
    deltas = random_deltas(int(p * 10) + 7 * ties, ties=ties)
    weights = torch.full((K,), coefficient)
    expected = merge_utils.ties(deltas, weights, 1 - p, majority_sign_method=method)
    merged = merge_ties(deltas, weights, 1 - p, majority_sign_method=method)
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-5)


def test_ties_with_unequal_weights_equals_peft():
    deltas = random_deltas(3)
    weights = torch.tensor([0.5, -0.2, 1.5, 0.0, 0.7])
    torch.testing.assert_close(merge_ties(deltas, weights, 0.7), merge_utils.ties(deltas, weights, 0.7),
                               atol=1e-5, rtol=1e-5)


def test_magnitude_prune_keeps_the_largest_fraction():
    delta = torch.randn(10, 10, generator=torch.Generator().manual_seed(0))
    pruned = magnitude_prune(delta, 0.3)
    assert int((pruned != 0).sum()) == 30
    assert pruned.abs().max() == delta.abs().max()
    assert delta.abs()[pruned == 0].max() <= pruned.abs()[pruned != 0].min()
    with pytest.raises(ValueError):
        magnitude_prune(delta, -0.1)


def test_ties_hand_example():
    # entry 0: + wins (3 - 1 > 0), mean of the agreeing 3 -> 3; entry 1: - wins (-4 + 2 < 0) -> -4
    deltas = [torch.tensor([3.0, 2.0]), torch.tensor([-1.0, -4.0])]
    torch.testing.assert_close(merge_ties(deltas, [1.0, 1.0], 1.0), torch.tensor([3.0, -4.0]))


def test_task_arithmetic_is_the_weighted_sum():
    deltas = random_deltas(1)
    weights = torch.tensor([0.1, 0.2, -0.3, 0.4, 1.0])
    expected = merge_utils.task_arithmetic(deltas, weights)
    torch.testing.assert_close(merge_task_arithmetic(deltas, weights), expected, atol=1e-6, rtol=1e-6)


def test_inputs_are_checked():
    deltas = random_deltas(0)
    with pytest.raises(ValueError, match="weights"):
        merge_ties(deltas, [1.0, 2.0], 0.5)
    with pytest.raises(ValueError, match="shape"):
        merge_task_arithmetic([torch.zeros(2, 3), torch.zeros(3, 2)], [1.0, 1.0])
    with pytest.raises(ValueError):
        merge_ties([], [], 0.5)


# --- DARE ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("density", [0.3, 0.8])
def test_dare_equals_peft_with_the_same_seed(density):
    deltas = random_deltas(5)
    weights = torch.tensor([0.2, 0.4, -0.1, 1.0, 0.5])
    torch.manual_seed(11)
    expected_linear = merge_utils.dare_linear(deltas, weights, density)
    torch.manual_seed(12)
    expected_ties = merge_utils.dare_ties(deltas, weights, density)
    linear = merge_dare_linear(deltas, weights, density, torch.Generator().manual_seed(11))
    ties = merge_dare_ties(deltas, weights, density, torch.Generator().manual_seed(12))
    torch.testing.assert_close(linear, expected_linear, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ties, expected_ties, atol=1e-5, rtol=1e-5)


def test_dare_rescales_the_survivors():
    delta = torch.randn(50, 50, generator=torch.Generator().manual_seed(0))
    dropped = random_drop(delta, 0.25, torch.Generator().manual_seed(1))
    kept = dropped != 0
    assert 0.15 < kept.float().mean() < 0.35
    torch.testing.assert_close(dropped[kept], delta[kept] / 0.25)
    merged = merge_dare_linear([delta], [1.0], 0.25, torch.Generator().manual_seed(1))
    torch.testing.assert_close(merged, dropped)  # the rescaled tensor is the one merged


def test_dare_is_deterministic_per_seed():
    deltas, weights = random_deltas(2), [0.2] * K
    first = merge_dare_ties(deltas, weights, 0.5, torch.Generator().manual_seed(3))
    again = merge_dare_ties(deltas, weights, 0.5, torch.Generator().manual_seed(3))
    other = merge_dare_ties(deltas, weights, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_dare_linear_is_unbiased():
    deltas = random_deltas(4, shape=(8, 8))
    weights = torch.tensor([0.5, 1.0, -0.5, 0.25, 2.0])
    generator = torch.Generator().manual_seed(0)
    mean = torch.stack([merge_dare_linear(deltas, weights, 0.5, generator) for _ in range(4000)]).mean(0)
    expected = merge_task_arithmetic(deltas, weights)
    # each entry's standard error is about sqrt(sum_i (w_i d_i)^2) / sqrt(4000) ~ 0.04 here
    torch.testing.assert_close(mean, expected, atol=0.2, rtol=0)
    assert (mean - expected).abs().mean() < 0.05


def test_dare_density_edges():
    deltas, weights = random_deltas(6), [1.0] * K
    generator = torch.Generator().manual_seed(0)
    undropped = merge_dare_linear(deltas, weights, 1.0, generator)
    torch.testing.assert_close(undropped, merge_task_arithmetic(deltas, weights))
    with pytest.raises(ValueError):
        merge_dare_linear(deltas, weights, 0.0, generator)


# --- TSV -------------------------------------------------------------------------------------------------------


def random_lora(seed: int, rank: int, out_features: int = 48, in_features: int = 40, scale: float = 0.5) -> LoraModule:
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(rank, in_features, generator=generator) / rank**0.5
    B = torch.randn(out_features, rank, generator=generator)
    return LoraModule(A, B, scale)


def tsv_reference(deltas: list[torch.Tensor], keep: int, weights: list[float]) -> torch.Tensor:
    """Independent TSV in float64: numpy-style SVDs, polar factors as U (U^T U)^(-1/2) via eigh."""
    Us, Ss, Vs = [], [], []
    for delta, w in zip(deltas, weights, strict=True):
        U, S, Vh = torch.linalg.svd(delta.double())
        rank = int(torch.linalg.matrix_rank(delta.double(), rtol=1e-5))
        s = min(keep, rank)
        Us.append(U[:, :s])
        Ss.append(w * S[:s])
        Vs.append(Vh[:s].T)

    def polar(M: torch.Tensor) -> torch.Tensor:
        values, vectors = torch.linalg.eigh(M.T @ M)
        return M @ vectors @ torch.diag(values.rsqrt()) @ vectors.T

    return polar(torch.cat(Us, 1)) @ torch.diag(torch.cat(Ss)) @ polar(torch.cat(Vs, 1)).T


def relative_error(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.double() - y.double()).norm() / y.double().norm())


@pytest.mark.parametrize("ranks", [(4, 16, 8), (2, 3, 5, 12), (16,)])
def test_tsv_factored_equals_dense_and_reference(ranks):
    modules = [random_lora(10 + i, r, scale=0.5 + i) for i, r in enumerate(ranks)]
    deltas = [m.delta() for m in modules]
    weights = [1 / len(ranks)] * len(ranks)
    reference = tsv_reference(deltas, 8, weights)
    B, A = merge_tsv_factored(modules, keep=8)
    assert B.shape[0] == 48 and A.shape[1] == 40 and B.shape[1] == A.shape[0] == sum(min(r, 8) for r in ranks)
    assert relative_error(B @ A, reference) < 1e-5
    assert relative_error(merge_tsv_dense(deltas, keep=8), reference) < 1e-5


def test_tsv_weights_scale_singular_values():
    modules = [random_lora(20 + i, 6) for i in range(3)]
    B, A = merge_tsv_factored(modules, weight=[0.2, 1.0, -0.5])
    reference = tsv_reference([m.delta() for m in modules], 8, [0.2, 1.0, -0.5])
    assert relative_error(B @ A, reference) < 1e-5
    B1, A1 = merge_tsv_factored(modules, weight=1.0)
    B3, A3 = merge_tsv_factored(modules)  # default 1/k: the uniform-weight result divided by k
    torch.testing.assert_close(B3 @ A3, (B1 @ A1) / 3, atol=1e-6, rtol=1e-5)


def test_tsv_of_one_lora_is_its_best_rank_keep_approximation():
    module = random_lora(30, 20)
    U, S, Vh = torch.linalg.svd(module.delta().double())
    best = (U[:, :8] * S[:8]) @ Vh[:8]
    B, A = merge_tsv_factored([module], keep=8, weight=1.0)
    assert B.shape == (48, 8) and A.shape == (8, 40)
    assert relative_error(B @ A, best) < 1e-5
    assert relative_error(merge_tsv_dense([module.delta()], keep=8, weight=1.0), best) < 1e-5


def test_tsv_more_triplets_than_dimensions():
    # 6 LoRAs x 8 triplets = 48 stacked columns > in_features 40: the polar factor has orthonormal rows
    modules = [random_lora(40 + i, 10, out_features=64) for i in range(6)]
    B, A = merge_tsv_factored(modules)
    dense = merge_tsv_dense([m.delta() for m in modules])
    assert relative_error(B @ A, dense) < 1e-5


def test_tsv_zero_lora_contributes_nothing():
    zero = LoraModule(torch.randn(4, 40), torch.zeros(48, 4), 1.0)
    live = random_lora(50, 6)
    B, A = merge_tsv_factored([zero, live], weight=1.0)
    assert B.shape[1] == 6
    assert relative_error(B @ A, live.delta()) < 1e-5
    B0, A0 = merge_tsv_factored([zero])
    assert B0.shape == (48, 0) and A0.shape == (0, 40)
