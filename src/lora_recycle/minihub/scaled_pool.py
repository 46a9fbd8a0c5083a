"""``hub scale``: a Hub-sized pool derived from a scanned pool's real adapters, to measure pool-scale costs.

Each derived adapter takes one source adapter's modules and, drawn from the seed: random orthogonal
rotations of each module's output and input spaces (the same delta norm spectrum, other directions;
``minihub/derive.py``), a random rescaling, another rank (truncated to its best approximation or
zero-padded), alpha and rsLoRA flag, a subset of the target modules, and Hub-like contributor and licence
metadata (a few contributors publish most adapters). A share is broken the ways Hub uploads are
(``minihub/pool.py``'s ``BROKEN_KINDS``). Written as PEFT folders ``OUT/<contributor>/<name>``, scanned
like any pool. Derived adapters carry no new task knowledge: they exist to measure cost, not quality.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lora_recycle.adapters.card import write_card
from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.adapters.lora_config import lora_scale
from lora_recycle.adapters.paths import coordinates
from lora_recycle.adapters.peft_io import write_peft_adapter
from lora_recycle.errors import UserError
from lora_recycle.minihub.derive import resize_rank, rotate
from lora_recycle.minihub.pool import ALPHAS, BROKEN_KINDS, LICENSES, RANKS, TARGET_SETS

RESCALE = (0.5, 2.0)  # log-uniform factor on each derived adapter's delta
RSLORA_SHARE = 0.15
TARGET_SHARES = {"all": 0.8, "qv": 0.1, "attn": 0.05, "mlp": 0.05}  # the paper's Figure 6, as plan_pool


@dataclass(frozen=True)
class DerivedPlan:
    """How one derived adapter is made from its source (recorded in its card)."""

    name: str
    source: str
    contributor: str
    license: str
    rank: int
    alpha: int
    use_rslora: bool
    targets: str
    rescale: float
    seed: int
    broken: str | None = None


def contributors(n: int) -> tuple[list[str], list[float]]:
    """Hub-like uploaders for a pool of ``n``: ``n / 10`` names (at least 8) with Zipf weights ``1 / rank``."""
    count = max(8, n // 10)
    return [f"user-{i:03d}" for i in range(count)], [1.0 / (i + 1) for i in range(count)]


def plan_derived(sources: list[str], n: int, seed: int = 0, broken: float = 0.05) -> list[DerivedPlan]:
    """``n`` derivation plans over ``sources`` (round-robin), deterministic in ``seed``; ``broken`` of them
    (rounded, the kinds in turn) are written broken."""
    rng = random.Random(seed)
    names, weights = contributors(n)
    targets = rng.choices(list(TARGET_SHARES), weights=list(TARGET_SHARES.values()), k=n)
    broken_slots = set(rng.sample(range(n), round(broken * n)))
    kinds = iter(BROKEN_KINDS * (n // len(BROKEN_KINDS) + 1))
    plans = []
    for i in range(n):
        source = sources[i % len(sources)]
        rank = rng.choice(RANKS)
        plans.append(DerivedPlan(
            name=f"{source.replace('/', '--')}-d{i:05d}", source=source,
            contributor=rng.choices(names, weights=weights)[0], license=rng.choice(LICENSES), rank=rank,
            alpha=rng.choice(ALPHAS), use_rslora=rng.random() < RSLORA_SHARE, targets=targets[i],
            rescale=round(math.exp(rng.uniform(*map(math.log, RESCALE))), 4), seed=seed * 1_000_003 + i,
            broken=next(kinds) if i in broken_slots else None))
    return plans


def derive_adapter(source: LoraAdapter, plan: DerivedPlan) -> LoraAdapter:
    """The adapter ``plan`` describes: rotated, rescaled, resized modules of ``source`` on its target subset."""
    generator = torch.Generator().manual_seed(plan.seed)
    wanted = set(TARGET_SETS[plan.targets])
    paths = [p for p in sorted(source.modules) if coordinates(p).module_type in wanted] or sorted(source.modules)
    scale = lora_scale(plan.alpha, plan.rank, plan.use_rslora)
    modules = {}
    for path in paths:
        module = source.modules[path]
        A, B = rotate(module.A.float(), module.B.float(), generator)
        A, B = resize_rank(A, B, plan.rank)
        modules[path] = LoraModule(A, B * (module.scale * plan.rescale / scale), scale)
    return LoraAdapter(modules, plan.name, source.base_model,
                       {"lora_alpha": plan.alpha, "use_rslora": plan.use_rslora})


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the block: the QRs and SVDs of rank-r factors are too small to split, and a second
    thread spins against whatever else runs (on two busy cores a 64 x 64 QR took 40 ms, 0.06 ms on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_derived_pool(catalog: Path, out: Path, n: int, seed: int = 0, broken: float = 0.05) -> list[DerivedPlan]:
    """Derive ``n`` adapters from the accepted adapters of the pool ``catalog`` into ``out`` (PEFT folders).

    Sources are read one derived adapter at a time, so memory stays flat in ``n``.
    """
    from lora_recycle.minihub.pool import break_adapter
    from lora_recycle.pool import load_pool_adapters
    from lora_recycle.pool.catalog import accepted_ids

    if n < 1:
        raise UserError(f"--adapters must be at least 1, got {n}")
    if not 0 <= broken < 1:
        raise UserError(f"--broken must be in [0, 1), got {broken}")
    sources = accepted_ids(catalog)
    if not sources:
        raise UserError(f"{catalog}: the catalog has no accepted adapters to derive from")
    plans = plan_derived(sources, n, seed, broken)
    for plan in plans:
        source = load_pool_adapters(catalog, [plan.source])[0]
        folder = out / plan.contributor / plan.name
        with one_thread():
            derived = derive_adapter(source, plan)
        write_peft_adapter(derived, folder, source.base_model or "", servable=False)
        write_card(folder, {"base_model": source.base_model, "license": plan.license, "library_name": "peft",
                            "contributor": plan.contributor, "tags": ["lora", "derived"],
                            "derived_from": plan.source, "derivation": asdict(plan)},
                   f"# {plan.name}\n\nDerived by `lora-recycle hub scale` from `{plan.source}` (random rotations, "
                   "rescaling and rank change of its modules). It carries no new task knowledge: it exists to "
                   "measure pool-scale costs.\n")
        if plan.broken is not None:
            break_adapter(folder, folder, plan.broken, contributor=plan.contributor)
    return plans
