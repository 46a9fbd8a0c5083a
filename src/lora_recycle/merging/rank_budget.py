"""Size an export by an error budget: per module the smallest rank within a relative Frobenius error, then one
uniform rank vLLM serves for the whole file.

The best rank-``q`` approximation of a module's update ``s B A`` has relative error
``e(q) = sqrt(sum_{i >= q} sigma_i^2 / sum_i sigma_i^2)`` (Eckart-Young), so the singular values from the
factored QR + small SVD (``merging.compress.factored_svd``) give every ``e(q)`` exactly, with no dense SVD.
The file's rank is the smallest servable rank holding every module's needed rank; each module is then kept at
that rank (or its own, if smaller), which costs no extra bytes and only lowers its error.

vLLM refuses LoRA ranks above 512. An exact merge of many adapters can exceed that (its factors concatenate),
so without a budget or a rank cap the export falls back to ``DEFAULT_MAX_ERROR`` instead of writing an adapter
no server loads; a budget that still needs more than 512 is capped there, and the note says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.adapters.peft_io import SERVABLE_RANKS, uniform_rank
from lora_recycle.merging.compress import factored_svd

VLLM_MAX_RANK = max(SERVABLE_RANKS)
Svd = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (U [out, t], S [n], V [in, t]): leading t triplets, all S
# Used only when an exact export would exceed VLLM_MAX_RANK and the user set neither --max-error nor --max-rank.
DEFAULT_MAX_ERROR = 0.05


def tail_errors(S: torch.Tensor) -> torch.Tensor:
    """``e(q)`` for ``q = 0 .. n``: the relative Frobenius error of keeping the top ``q`` of the ``n`` singular
    values ``S`` (float64, non-increasing, ``e(n) = 0``; all zeros for a zero matrix).

    >>> tail_errors(torch.tensor([3.0, 4.0])).tolist()
    [1.0, 0.8, 0.0]
    """
    squares = S.to(torch.float64).square()
    total = squares.sum()
    tails = torch.cat([squares.flip(0).cumsum(0).flip(0), squares.new_zeros(1)])
    if float(total) <= 0:
        return torch.zeros_like(tails)
    return (tails / total).clamp_min(0).sqrt()


def rank_for_error(S: torch.Tensor, max_error: float) -> int:
    """The smallest rank whose truncation error is at most ``max_error`` (0 for a zero matrix).

    >>> rank_for_error(torch.tensor([3.0, 4.0]), 0.8), rank_for_error(torch.tensor([3.0, 4.0]), 0.79)
    (1, 2)
    """
    if max_error < 0:
        raise ValueError(f"max_error must be >= 0, got {max_error}")
    return int(torch.nonzero(tail_errors(S) <= max_error)[0, 0])


@dataclass(frozen=True)
class ModuleRank:
    """One module's ranks: as merged, needed for the budget (or cap), exported; and its exported error."""

    factor_rank: int
    needed_rank: int
    rank: int
    error: float


@dataclass(frozen=True)
class ExportRank:
    """The uniform rank of an export file and how each module got there."""

    rank: int
    modules: dict[str, ModuleRank]
    max_error: float | None = None
    max_rank: int | None = None
    compressed: bool = False
    note: str | None = None

    def record(self) -> dict:
        """JSON-ready: the chosen rank, the budget, the note, the worst/mean error and every module's ranks."""
        errors = [m.error for m in self.modules.values()] or [0.0]
        return {"rank": self.rank, "max_error": self.max_error, "max_rank": self.max_rank,
                "compressed": self.compressed, "note": self.note,
                "max_relative_error": max(errors), "mean_relative_error": sum(errors) / len(errors),
                "needed_rank": max((m.needed_rank for m in self.modules.values()), default=0),
                "modules": {p: {"factor_rank": m.factor_rank, "needed_rank": m.needed_rank, "rank": m.rank,
                                "error": m.error} for p, m in self.modules.items()}}


def _truncate(module: LoraModule, q: int, svd: Svd | None = None) -> tuple[LoraModule, float]:
    """The best rank-``q`` factors of ``module`` (scale folded, sqrt(S) split evenly) and their error.

    ``svd``: the module's leading singular triplets (at least ``q`` of them, all singular values), if known.
    """
    A = module.A
    U, S, V = svd if svd is not None else factored_svd(A, module.B * module.scale)
    q = min(q, S.numel())
    root = S[:q].sqrt()
    truncated = LoraModule((root[:, None] * V[:, :q].T).to(A.dtype), (U[:, :q] * root).to(module.B.dtype), 1.0)
    return truncated, float(tail_errors(S)[q])


def fit_export_rank(
    adapter: LoraAdapter, max_rank: int | None = None, max_error: float | None = None,
    ceiling: int = VLLM_MAX_RANK,
) -> tuple[LoraAdapter, ExportRank]:
    """The adapter to export and its rank report: exact when servable and nothing was asked; else each module
    compressed to the smallest rank within ``max_error`` and/or at most ``max_rank``, at one uniform servable
    rank no larger than ``ceiling``.
    """
    if max_rank is not None and max_rank < 1:
        raise ValueError(f"max_rank must be at least 1, got {max_rank}")
    if max_error is not None and not 0 <= max_error < 1:
        raise ValueError(f"max_error must be in [0, 1), got {max_error}")
    modules = adapter.modules
    exact = uniform_rank([m.rank for m in modules.values()]) if modules else 0
    note = None
    if max_rank is None and max_error is None:
        if exact <= ceiling:
            report = {p: ModuleRank(m.rank, m.rank, m.rank, 0.0) for p, m in modules.items()}
            return adapter, ExportRank(exact, report)
        needed = max(m.rank for m in modules.values())
        max_error = DEFAULT_MAX_ERROR
        note = (f"the exact merge needs rank {needed}, above {ceiling} (the largest LoRA rank vLLM serves); "
                f"compressed to the default error budget --max-error {DEFAULT_MAX_ERROR:g}")
    cap = max_rank or math.inf
    keep = int(min(cap, ceiling))  # no module is kept above this rank, whatever the budget finds
    needed_ranks: dict[str, int] = {}
    svds: dict[str, Svd] = {}  # each SVD once: its leading ``keep`` triplets serve the truncation below
    for path, m in modules.items():
        if max_error is None:
            needed_ranks[path] = int(min(m.rank, cap))
        else:
            U, S, V = factored_svd(m.A, m.B * m.scale)
            needed_ranks[path] = int(min(rank_for_error(S, max_error), cap))
            # copies, not views: a view would hold a dense module's whole [out, min(out, in)] U
            svds[path] = (U[:, :keep].contiguous(), S, V[:, :keep].contiguous())
    rank = uniform_rank(list(needed_ranks.values()) or [1])
    if rank > ceiling:
        note = ((note + "; ") if note else "") + (
            f"modules need up to rank {max(needed_ranks.values())}, above vLLM's {ceiling}: capped at {ceiling}")
        rank = ceiling
    out: dict[str, LoraModule] = {}
    report: dict[str, ModuleRank] = {}
    for path, m in modules.items():
        q = int(min(rank, cap))
        if m.rank <= q:
            out[path], error = m, 0.0
        else:
            out[path], error = _truncate(m, q, svds.pop(path, None))
        report[path] = ModuleRank(m.rank, needed_ranks[path], out[path].rank, error)
    result = ExportRank(rank, report, max_error, max_rank, compressed=True, note=note)
    return replace(adapter, modules=out), result
