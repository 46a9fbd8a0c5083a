"""Rank compression through QR + small SVD against a dense truncated SVD."""

from __future__ import annotations

import math

import pytest
import torch

from lora_recycle.adapters.lora import LoraModule
from lora_recycle.merging.compress import compress_factors, compress_module, factored_svd


def factors(seed: int, rank: int, out_features: int = 64, in_features: int = 48, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(rank, in_features, generator=generator, dtype=dtype)
    B = torch.randn(out_features, rank, generator=generator, dtype=dtype) * torch.linspace(2, 0.01, rank, dtype=dtype)
    return A, B


def dense_truncation(A: torch.Tensor, B: torch.Tensor, rank: int) -> tuple[torch.Tensor, float]:
    product = B.double() @ A.double()
    U, S, Vh = torch.linalg.svd(product, full_matrices=False)
    best = (U[:, :rank] * S[:rank]) @ Vh[:rank]
    return best, float((product - best).norm() / product.norm())


@pytest.mark.parametrize(("rank", "max_rank"), [(32, 8), (32, 31), (20, 1), (40, 16)])
def test_compression_equals_dense_truncated_svd(rank, max_rank):
    A, B = factors(rank + max_rank, rank)
    A2, B2, error = compress_factors(A, B, max_rank)
    best, best_error = dense_truncation(A, B, max_rank)
    assert A2.shape == (max_rank, 48) and B2.shape == (64, max_rank) and A2.dtype == A.dtype
    scale = best.norm()
    assert float((B2.double() @ A2.double() - best).norm() / scale) < 1e-5
    assert math.isclose(error, best_error, rel_tol=1e-5, abs_tol=1e-7)


def test_rank_above_the_dimensions():
    A, B = factors(1, 80, out_features=30, in_features=50)  # R = 80 > out = 30: rank at most 30
    A2, B2, error = compress_factors(A, B, 40)
    assert B2.shape == (30, 30) and error < 1e-6
    torch.testing.assert_close(B2 @ A2, B @ A, atol=1e-3, rtol=1e-4)


def test_no_compression_needed_is_exact():
    A, B = factors(2, 8)
    A2, B2, error = compress_factors(A, B, 8)
    assert A2 is A and B2 is B and error == 0.0
    with pytest.raises(ValueError):
        compress_factors(A, B, 0)


def test_zero_product_has_zero_error():
    A = torch.randn(16, 48)
    A2, B2, error = compress_factors(A, torch.zeros(64, 16), 4)
    assert error == 0.0 and torch.count_nonzero(B2 @ A2) == 0


def test_factored_svd_is_the_svd():
    A, B = factors(3, 12, dtype=torch.float64)
    U, S, V = factored_svd(A, B, scale=0.25)
    torch.testing.assert_close((U * S) @ V.T, 0.25 * B @ A)
    torch.testing.assert_close(U.T @ U, torch.eye(12, dtype=torch.float64))
    torch.testing.assert_close(V.T @ V, torch.eye(12, dtype=torch.float64))
    torch.testing.assert_close(S, torch.linalg.svdvals(0.25 * B @ A)[:12])


def test_compress_module_folds_the_scale():
    A, B = factors(4, 24)
    module = LoraModule(A, B, 16 / 24)
    compressed, error = compress_module(module, 6)
    best, best_error = dense_truncation(A, B * module.scale, 6)
    assert compressed.scale == 1.0 and compressed.rank == 6
    assert float((compressed.delta(torch.float64) - best).norm() / best.norm()) < 1e-5
    assert math.isclose(error, best_error, rel_tol=1e-5)
