"""Fit a heterogeneous pool to what PEFT's Arrow accepts: one module set and one rank for every adapter.

PEFT's ``create_arrow_model`` refuses adapters whose ranks, shapes or target modules differ
(``check_loaded_lora_compatibility_arrow``), and its per-layer routing needs every expert at every
routed module. The rule applied here, documented in docs/reference.md:

- **rank**: every kept module is zero-padded to the largest rank in the pool. This is exact: the
  update ``s B A`` is unchanged, and so is Arrow's prototype (the power iteration on
  ``A^T (B^T B) A`` only gains zero rows and columns). It costs compute (``E x r_max`` per token).
- **modules** (``cover``, the default): route on the module set that maximises the number of
  (expert, module) pairs kept; adapters that do not cover that set are dropped from the pool,
  the others lose only the modules outside it. ``intersect`` keeps every adapter and routes only
  on the modules all of them share. Required adapters (the target-task LoRA, general adapters)
  are never dropped: the routed set is always inside their modules.
- a pool with no module common to the kept adapters is refused with the reason, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.adapters.paths import coordinates
from lora_recycle.errors import UserError

ModuleRule = Literal["cover", "intersect"]
MODULE_RULES: tuple[str, ...] = ("cover", "intersect")


@dataclass
class ArrowPool:
    """Experts and general adapters restricted to ``paths`` and padded to ``rank``, and what was cut."""

    experts: list[LoraAdapter]
    general: list[LoraAdapter]
    paths: list[str]
    rank: int
    dropped: dict[str, str] = field(default_factory=dict)  # adapter id -> why it is not routed
    unrouted_modules: dict[str, int] = field(default_factory=dict)  # adapter id -> modules left out

    def summary(self) -> dict:
        """JSON-ready description: routed modules, rank, dropped adapters and trimmed modules."""
        return {"experts": [a.adapter_id for a in self.experts], "general": [a.adapter_id for a in self.general],
                "routed_modules": len(self.paths), "module_types": sorted({coordinates(p).module_type
                                                                            for p in self.paths}),
                "rank": self.rank, "dropped": self.dropped, "unrouted_modules": self.unrouted_modules}


def choose_paths(path_sets: list[frozenset[str]], required: list[frozenset[str]], rule: ModuleRule) -> frozenset[str]:
    """The module set to route on, given each expert's module paths and the required adapters' ones.

    ``cover`` returns the candidate set (an expert's paths within every required set) with the most
    (expert, module) pairs covered, ties broken by the larger set, then by pool order;
    ``intersect`` returns the paths every expert and required adapter share.

    >>> a, b, c = frozenset("qkv"), frozenset("qkv"), frozenset("q")
    >>> sorted(choose_paths([a, b, c], [], "cover")), sorted(choose_paths([a, b, c], [], "intersect"))
    (['k', 'q', 'v'], ['q'])
    """
    ceiling = frozenset.intersection(*required) if required else None
    if rule == "intersect":
        return frozenset.intersection(*path_sets, *required)
    best, best_key = frozenset(), (0, 0)
    for paths in path_sets:
        candidate = paths & ceiling if ceiling is not None else paths
        covering = sum(candidate <= other for other in path_sets)
        key = (covering * len(candidate), len(candidate))
        if key > best_key:
            best, best_key = candidate, key
    return best


def pad_module(module: LoraModule, rank: int) -> LoraModule:
    """``module`` with ``A`` padded by zero rows and ``B`` by zero columns to ``rank``: same update, same scale."""
    extra = rank - module.rank
    if extra == 0:
        return module
    A = torch.nn.functional.pad(module.A, (0, 0, 0, extra))
    B = torch.nn.functional.pad(module.B, (0, extra))
    return LoraModule(A, B, module.scale)


def restrict(adapter: LoraAdapter, paths: list[str], rank: int) -> LoraAdapter:
    """The adapter on ``paths`` only, every module padded to ``rank``."""
    return replace(adapter, modules={p: pad_module(adapter.modules[p], rank) for p in paths})


def prepare_arrow_pool(experts: list[LoraAdapter], general: list[LoraAdapter], rule: ModuleRule = "cover",
                       required_ids: tuple[str, ...] = ()) -> ArrowPool:
    """Apply the module and rank rule to a pool; raises UserError when nothing can be routed."""
    if rule not in MODULE_RULES:
        raise UserError(f"arrow module rule {rule!r}: choose one of {', '.join(MODULE_RULES)}")
    if not experts:
        raise UserError("arrow needs at least one task adapter in the pool")
    sets = [frozenset(a.modules) for a in experts]
    required = [frozenset(a.modules) for a in experts if a.adapter_id in required_ids]
    required += [frozenset(a.modules) for a in general]
    chosen = choose_paths(sets, required, rule)
    if not chosen:
        what = "the target-task LoRA and general adapters" if required else "the selected adapters"
        raise UserError(f"arrow: {what} share no module to route on (module rule {rule}); "
                        "choose adapters with common target modules (--ids) or another --arrow-modules rule")
    paths = sorted(chosen, key=lambda p: (coordinates(p), p))
    kept = [a for a, s in zip(experts, sets, strict=True) if chosen <= s]
    dropped = {a.adapter_id: f"does not cover the {len(paths)} routed modules"
               for a, s in zip(experts, sets, strict=True) if not chosen <= s}
    rank = max(a.modules[p].rank for a in [*kept, *general] for p in paths)
    unrouted = {a.adapter_id: len(a.modules) - len(paths) for a in [*kept, *general] if len(a.modules) > len(paths)}
    return ArrowPool([restrict(a, paths, rank) for a in kept], [restrict(a, paths, rank) for a in general],
                     paths, rank, dropped, unrouted)
