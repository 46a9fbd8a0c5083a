"""Exact SVD of a factored product ``B @ A`` and rank compression, without a dense SVD of the full matrix.

With ``B = Q_B R_B`` and ``A^T = Q_A R_A`` (thin QRs), ``B A = Q_B (R_B R_A^T) Q_A^T``, so the SVD of the small
``R x R`` core ``R_B R_A^T = W S Z^T`` gives the exact SVD ``B A = (Q_B W) S (Q_A Z)^T``. That costs
``O((out + in) R^2 + R^3)`` instead of ``O(out * in * min(out, in))``; the small core is done in float64.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from lora_recycle.adapters.lora import LoraAdapter, LoraModule


def factored_svd(
    A: torch.Tensor, B: torch.Tensor, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The thin SVD of ``scale * B @ A`` from its factors ``A [R, in]`` and ``B [out, R]``, in float64.

    Returns ``(U [out, t], S [t], V [in, t])`` with ``t = min(out, in, R)``, singular values descending, so
    ``scale * B @ A == U @ diag(S) @ V.T``. Trailing singular values may be (numerically) zero.
    """
    if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
        raise ValueError(f"inconsistent factors: A {tuple(A.shape)}, B {tuple(B.shape)}")
    Q_B, R_B = torch.linalg.qr(B.to(torch.float64))  # [out, p], [p, R]
    Q_A, R_A = torch.linalg.qr(A.to(torch.float64).T)  # [in, q], [q, R]
    W, S, Zh = torch.linalg.svd(scale * (R_B @ R_A.T), full_matrices=False)  # core [p, q]
    return Q_B @ W, S, Q_A @ Zh.T


def compress_factors(
    A: torch.Tensor, B: torch.Tensor, max_rank: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The best rank-``max_rank`` approximation of ``B @ A`` as new factors, and its relative Frobenius error.

    ``A [R, in]``, ``B [out, R]`` -> ``(A' [q, in], B' [out, q], error)`` with ``q = min(max_rank, R, out, in)``
    and ``error = ||B A - B' A'||_F / ||B A||_F``, computed exactly from the discarded singular values (0 for a
    zero product). The singular values are split evenly, ``B' = U sqrt(S)``, ``A' = sqrt(S) V^T``, so both
    factors have comparable magnitudes (kinder to bf16/fp16 storage). Factors come back in ``A``'s dtype.
    When ``R <= max_rank`` nothing is discarded and the inputs are returned unchanged with error 0.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be at least 1, got {max_rank}")
    if A.shape[0] <= max_rank:
        return A, B, 0.0
    U, S, V = factored_svd(A, B)
    q = min(max_rank, S.numel())
    total = float(S.square().sum())
    error = math.sqrt(float(S[q:].square().sum()) / total) if total > 0 else 0.0
    root = S[:q].sqrt()
    return (root[:, None] * V[:, :q].T).to(A.dtype), (U[:, :q] * root).to(A.dtype), error


def compress_module(module: LoraModule, max_rank: int) -> tuple[LoraModule, float]:
    """Compress one LoRA module to rank ``max_rank`` with its scale folded into the factors (scale 1.0).

    Returns ``(module', relative Frobenius error of module'.delta() against module.delta())``.
    """
    A, B, error = compress_factors(module.A, module.B * module.scale, max_rank)
    return LoraModule(A, B.to(module.B.dtype), 1.0), error


def compress_adapter(adapter: LoraAdapter, max_rank: int) -> tuple[LoraAdapter, dict[str, float]]:
    """Every module compressed to at most ``max_rank`` (QR + small SVD of the factors, never dense)."""
    modules, errors = {}, []
    for path, module in adapter.modules.items():
        modules[path], error = compress_module(module, max_rank)
        errors.append(error)
    summary = {"max_relative_error": max(errors, default=0.0),
               "mean_relative_error": sum(errors) / max(len(errors), 1)}
    return replace(adapter, modules=modules), summary
