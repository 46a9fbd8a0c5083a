"""What the pool knows about one adapter: its modules, its validation outcome and its catalog record.

One family of types: ``validate_adapter`` fills a ``ValidationResult``; the scan adds where the adapter
came from, giving the ``AdapterRecord`` the catalog stores (and ``ModuleInfo`` is one module of either).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REASONS = (
    "no_license",
    "not_safetensors",
    "unsupported_type",
    "base_mismatch",
    "shape_mismatch",
    "unknown_module",
    "nonfinite",
    "outlier",
    "empty",
    "near_empty",
    "corrupt",
    # hostile or unreasonable input
    "bad_config",
    "bad_pattern",
    "bad_card",
    "rank_too_large",
    "timeout",
    "outside_source",
    "ambiguous_key",
)


@dataclass(frozen=True)
class ModuleInfo:
    """One LoRA module of an adapter: canonical path, rank, alpha and the resulting scale."""

    path: str
    rank: int
    alpha: float
    scale: float


@dataclass
class ValidationResult:
    """Outcome of validating one adapter directory: reason code -> detail, plus what was learned."""

    reasons: dict[str, str] = field(default_factory=dict)
    format: str | None = None
    weights_file: Path | str | None = None
    sha256: str | None = None
    size: int | None = None
    license: str | None = None
    base_model: str | None = None
    rank: int | None = None
    alpha: float | None = None
    use_rslora: bool = False
    modules: list[ModuleInfo] = field(default_factory=list)
    max_delta_ratio: float | None = None
    delta_norm: float | None = None  # ||s B A||_F over all modules of the adapter
    card: dict = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return not self.reasons

    @property
    def status(self) -> str:
        return "accepted" if self.accepted else "rejected"

    def reject(self, code: str, detail: str) -> None:
        """Record a reason (the first detail of each code is kept)."""
        assert code in REASONS, code
        self.reasons.setdefault(code, detail)


@dataclass(kw_only=True)
class AdapterRecord(ValidationResult):
    """A validation result plus where the adapter came from: everything the catalog keeps about it."""

    id: str
    source_kind: str
    source: str
    path: str
    fingerprint: str
    policy: str
    revision: str | None = None
    contributor: str | None = None
