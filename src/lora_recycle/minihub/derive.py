"""Tensor maths for deriving new adapters from real ones without training (``hub scale``).

A LoRA module's task vector is ``s B A`` with ``A [r, in]``, ``B [out, r]``. Rotating its output and input
spaces by random orthogonal ``U [out, out]`` and ``V [in, in]`` gives ``s (U B)(A V)``: the same singular
values (the same delta norm spectrum), other directions. For large dimensions the rotations are
structured: a random signed permutation times one Householder reflection, applied in ``O(n r)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RandomOrthogonal:
    """``Q = P D H``: a Householder reflection ``H = I - 2 v v^T / v^T v``, random signs ``D``, permutation ``P``."""

    v: torch.Tensor
    signs: torch.Tensor
    perm: torch.Tensor

    @classmethod
    def draw(cls, n: int, generator: torch.Generator) -> RandomOrthogonal:
        v = torch.randn(n, generator=generator, dtype=torch.float64)
        signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64) * 2 - 1
        return cls(v, signs, torch.randperm(n, generator=generator))

    def apply(self, M: torch.Tensor) -> torch.Tensor:
        """``Q @ M`` for ``M [n, k]`` (in float64, returned in ``M``'s dtype), never building ``Q``."""
        x = M.to(torch.float64)
        x = x - (2.0 / float(self.v @ self.v)) * torch.outer(self.v, self.v @ x)
        return (x * self.signs[:, None])[self.perm].to(M.dtype)


def rotate(A: torch.Tensor, B: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A V, U B)`` for fresh random orthogonal ``U``, ``V``: the delta's singular values are kept exactly."""
    U = RandomOrthogonal.draw(B.shape[0], generator)
    V = RandomOrthogonal.draw(A.shape[1], generator)
    return V.apply(A.T).T.contiguous(), U.apply(B).contiguous()


def resize_rank(A: torch.Tensor, B: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of rank ``rank`` for ``B @ A``: zero-padded (the same delta) or truncated to its best rank-``rank``
    approximation (an SVD of the ``r x r`` core of thin QRs, never of the dense delta)."""
    r = A.shape[0]
    if rank >= r:
        return (torch.nn.functional.pad(A, (0, 0, 0, rank - r)).contiguous(),
                torch.nn.functional.pad(B, (0, rank - r)).contiguous())
    QB, RB = torch.linalg.qr(B.to(torch.float64))
    QA, RA = torch.linalg.qr(A.T.to(torch.float64))
    U, S, Vh = torch.linalg.svd(RB @ RA.T)
    B_new = (QB @ U[:, :rank]) * S[:rank]
    A_new = Vh[:rank] @ QA.T
    return A_new.to(A.dtype).contiguous(), B_new.to(B.dtype).contiguous()
