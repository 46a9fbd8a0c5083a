"""Task Singular Vectors merging (TSV-M, Gargiulo et al., CVPR 2025), per module.

For each of k task vectors keep its top ``keep`` singular triplets ``(U_i, S_i, V_i)``; stack
``U = [U_1 .. U_k]``, ``S = diag(S_1 .. S_k)``, ``V = [V_1 .. V_k]``; replace ``U`` and ``V`` by their
polar factors (the nearest matrices with orthonormal columns, ``P Q^T`` from ``U = P Sigma Q^T``), which
decorrelates the tasks' singular vectors; and recombine ``U_orth S V_orth^T``.

Where the weight goes: the TSV authors apply one scaling coefficient alpha to the merged task vector
(alpha = 1.0 in TSV-M). The recycling paper (appendix C) assigns each LoRA a weight of 1/k "for its
contribution to the shared full matrix", and its authors' code multiplies each task's singular values
``S_i`` by its weight before recombining. We do the same: ``weight[i]`` scales ``S_i``. Because the
recombination is linear in ``S``, a uniform weight equals the TSV authors' alpha applied afterwards; the
default is 1/k (the paper's setting).

Ranks: a task contributes ``min(keep, its numerical rank)`` triplets; singular values at or below
``max(out, in) * eps * S_max`` (eps of the inputs' precision, at least float32's) are dropped rather than
kept as zero-padding, since the arbitrary singular vectors of a zero singular value would still change
the orthogonalisation of the others (the authors' code keeps them when a rank is below ``keep``).

``merge_tsv_dense`` is the reference on dense deltas. ``merge_tsv_factored`` never forms a dense delta: the
per-LoRA SVD comes exactly from QRs of ``B`` and ``A^T`` and an ``r x r`` SVD (:func:`factored_svd`), and
the polar factor of each stacked thin matrix comes from its QR and a small SVD. All SVD work is in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lora_recycle.adapters.lora import LoraModule
from lora_recycle.merging.compress import factored_svd

DEFAULT_KEEP = 8


def tsv_weights(k: int, weight: float | Sequence[float] | torch.Tensor | None) -> torch.Tensor:
    """Per-task weights as a float64 ``[k]`` tensor: ``1/k`` each by default, or a scalar for all, or ``k`` values."""
    if weight is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    weights = torch.as_tensor(weight, dtype=torch.float64).reshape(-1)
    if weights.numel() == 1:
        return weights.expand(k).clone()
    if weights.numel() != k:
        raise ValueError(f"{k} task vectors but {weights.numel()} weights")
    return weights


def _top_triplets(
    U: torch.Tensor, S: torch.Tensor, V: torch.Tensor, keep: int, shape: tuple[int, int], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``keep`` triplets of a descending SVD, without the numerically zero singular values.

    "Zero" is relative to the precision of the inputs (``dtype``; at least float32's), like ``matrix_rank``.
    """
    if S.numel() == 0:
        return U[:, :0], S[:0], V[:, :0]
    eps = torch.finfo(torch.promote_types(dtype, torch.float32)).eps
    tolerance = max(shape) * eps * float(S[0])
    s = min(keep, int(S.gt(tolerance).sum()))
    return U[:, :s], S[:s], V[:, :s]


def polar_factor(M: torch.Tensor) -> torch.Tensor:
    """The orthogonal polar factor ``P Q^T`` of ``M [n, m]`` (``M = P Sigma Q^T``, thin SVD): same shape as ``M``."""
    P, _, Qh = torch.linalg.svd(M, full_matrices=False)
    return P @ Qh


def polar_factor_thin(M: torch.Tensor) -> torch.Tensor:
    """:func:`polar_factor` of a tall ``M [n, m]`` through ``M = Q R`` and the SVD of the small ``R``."""
    Q, R = torch.linalg.qr(M)  # [n, p], [p, m] with p = min(n, m)
    P, _, Qh = torch.linalg.svd(R, full_matrices=False)
    return Q @ (P @ Qh)


def _check_keep(keep: int) -> None:
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")


def merge_tsv_dense(
    deltas: Sequence[torch.Tensor], keep: int = DEFAULT_KEEP, weight: float | Sequence[float] | None = None
) -> torch.Tensor:
    """Reference TSV merge of ``k`` dense task vectors ``[out, in]`` of one module; returns ``[out, in]``.

    Uses a full SVD of every delta; prefer :func:`merge_tsv_factored` for LoRA inputs.
    """
    _check_keep(keep)
    if len(deltas) == 0:
        raise ValueError("no task vectors to merge")
    shape = tuple(deltas[0].shape)
    weights = tsv_weights(len(deltas), weight)
    Us, Ss, Vs = [], [], []
    for delta, w in zip(deltas, weights, strict=True):
        if tuple(delta.shape) != shape:
            raise ValueError(f"task vectors differ in shape: {shape} and {tuple(delta.shape)}")
        U, S, Vh = torch.linalg.svd(delta.to(torch.float64), full_matrices=False)
        U, S, V = _top_triplets(U, S, Vh.T, keep, shape, delta.dtype)
        Us.append(U)
        Ss.append(w * S)
        Vs.append(V)
    S = torch.cat(Ss)
    if S.numel() == 0:
        return torch.zeros(shape, dtype=deltas[0].dtype)
    U_orth, V_orth = polar_factor(torch.cat(Us, dim=1)), polar_factor(torch.cat(Vs, dim=1))
    return ((U_orth * S) @ V_orth.T).to(deltas[0].dtype)


def merge_tsv_factored(
    modules: Sequence[LoraModule], keep: int = DEFAULT_KEEP, weight: float | Sequence[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """TSV merge of ``k`` LoRA modules at one place in the model, as LoRA factors ``(B' [out, q], A' [q, in])``.

    ``B' @ A'`` equals :func:`merge_tsv_dense` of the modules' deltas (``scale * B @ A``); ``q`` is the number
    of kept triplets (at most ``k * keep``), ``B' = U_orth diag(w S)`` and ``A' = V_orth^T``, so the result
    exports as a LoRA with scale 1. Pass only the modules present here; with ``weight=None`` each gets
    ``1/len(modules)``. Factors come back in the first module's dtype.
    """
    _check_keep(keep)
    if len(modules) == 0:
        raise ValueError("no LoRA modules to merge")
    shape = (modules[0].out_features, modules[0].in_features)
    weights = tsv_weights(len(modules), weight)
    Us, Ss, Vs = [], [], []
    for module, w in zip(modules, weights, strict=True):
        if (module.out_features, module.in_features) != shape:
            raise ValueError(f"modules differ in shape: {shape} and {(module.out_features, module.in_features)}")
        U, S, V = _top_triplets(*factored_svd(module.A, module.B, module.scale), keep, shape, module.A.dtype)
        Us.append(U)
        Ss.append(w * S)
        Vs.append(V)
    dtype = modules[0].A.dtype
    S = torch.cat(Ss)
    if S.numel() == 0:
        return torch.zeros((shape[0], 0), dtype=dtype), torch.zeros((0, shape[1]), dtype=dtype)
    U_orth, V_orth = polar_factor_thin(torch.cat(Us, dim=1)), polar_factor_thin(torch.cat(Vs, dim=1))
    return (U_orth * S).to(dtype), V_orth.T.to(dtype)
