"""Assemble the pool a merge runs on: explicit adapters and catalog ids, or a selection strategy, then the
random-init control and the target-task LoRA. The CLI, the experiment runner and the demo all call this.

With the target-task LoRA a merge of k adapters holds it first and the top k - 1 selected (the paper's
convention, ``recipe/with_target.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lora_recycle.recipe.settings import MergeSettings
from lora_recycle.tasks.format import Task

if TYPE_CHECKING:
    import torch

    from lora_recycle.adapters.lora import LoraAdapter
    from lora_recycle.pool.base_spec import BaseModelSpec
    from lora_recycle.selection.sharded import Workers

DEFAULT_K = 30  # paper: 30 selected adapters unless the method says otherwise (its preset's k)


@dataclass
class PoolRequest:
    """Where a merge's adapters come from.

    ``adapters`` are already loaded and ``adapter_dirs`` are read (id = folder name); ``db`` with ``ids``
    takes those catalog ids, ``db`` without them
    selects by ``settings.selection`` (``all`` without k: every accepted adapter; ``all`` with k:
    random). ``target`` (the target-task LoRA) informs similarity selection and, when ``include_target``,
    comes first, never randomised, with k - 1 selected after it; ``target_dir`` is read as
    ``target:<folder name>``. With ``base`` (the base model's spec; ``run_merge`` sets it from the model
    folder), folders are checked as ``pool scan`` checks them (``read_checked_adapter``). ``random_init``
    replaces the other adapters by noise of the same shape, with ``noise_std`` ``pooled`` (one std per
    module over the recycled adapters) or ``per_adapter``.
    """

    adapters: list[LoraAdapter] = field(default_factory=list)
    adapter_dirs: list[Path] = field(default_factory=list)
    db: Path | str | None = None
    ids: list[str] | None = None
    target: LoraAdapter | None = None
    target_dir: Path | None = None
    include_target: bool = True
    random_init: bool = False
    default_k: int = DEFAULT_K
    noise_std: str = "pooled"
    precision: str = "fp32"  # model-scored selection (evaluation, loss) runs and caches its scores in this
    workers: Workers | None = None  # model-scored selection in shards on these (e.g. Ray); None: on the model
    base: BaseModelSpec | None = None  # folders are read through the pool's validation against it (if set)
    checked: dict[str, str] = field(default_factory=dict)  # folder -> weights sha256, validated against ``base``

    @property
    def with_target(self) -> bool:
        return self.include_target and self.target is not None


@dataclass
class Pool:
    """The adapters to merge, in order, the selection scores of every accepted adapter (if scored), and the id
    of the target-task LoRA among the adapters (None when it is not in the pool; ``merge_adapters`` takes it)."""

    adapters: list[LoraAdapter]
    scores: dict[str, float] = field(default_factory=dict)
    target_id: str | None = None

    @property
    def ids(self) -> list[str]:
        return [a.adapter_id for a in self.adapters]


def check_folders(request: PoolRequest) -> None:
    """Validate every adapter folder the user gave (``adapter_dirs``, ``target_dir``) against ``request.base``
    before any is read: a refused one answers before torch is imported, whatever its place on the command line."""
    from lora_recycle.pool.loading import check_adapter_folder

    named = [(p, Path(p).name) for p in request.adapter_dirs]
    if request.target is None and request.target_dir is not None:
        named.append((request.target_dir, f"target:{Path(request.target_dir).name}"))
    for directory, adapter_id in named:
        if str(directory) not in request.checked:
            request.checked[str(directory)] = check_adapter_folder(directory, request.base, adapter_id)


def read_folder(request: PoolRequest, directory: str | Path, adapter_id: str) -> LoraAdapter:
    """One adapter folder given by the user: through the pool's validation when ``request.base`` is set."""
    if request.base is not None:
        from lora_recycle.pool import read_checked_adapter

        return read_checked_adapter(directory, request.base, adapter_id, sha256=request.checked.get(str(directory)))
    from lora_recycle.adapters import read_peft_adapter

    return read_peft_adapter(directory, adapter_id=adapter_id)


def explicit_adapters(request: PoolRequest) -> list[LoraAdapter]:
    """The given adapters and folders plus explicit catalog ids (read and checked before any model loads)."""
    adapters = [*request.adapters, *(read_folder(request, p, Path(p).name) for p in request.adapter_dirs)]
    if request.db is not None and request.ids:
        from lora_recycle.pool import load_pool_adapters

        adapters += load_pool_adapters(request.db, list(request.ids))
    return adapters


def read_target(request: PoolRequest) -> None:
    """Read ``target_dir`` into ``target`` (once)."""
    if request.target is None and request.target_dir is not None:
        request.target = read_folder(request, request.target_dir, f"target:{Path(request.target_dir).name}")


def selected_adapters(request: PoolRequest, settings: MergeSettings, model=None, tokenizer=None,
                      task: Task | None = None, device: torch.device | str = "cpu",
                      log: Callable[[str], None] | None = None) -> Pool:
    """Adapters chosen from the catalog by the settings' selection strategy (none without a catalog or with ids)."""
    if request.db is None or request.ids:
        return Pool([])
    from lora_recycle.pool import load_pool_adapters
    from lora_recycle.pool.catalog import accepted_ids
    from lora_recycle.recipe.with_target import recycled_count
    from lora_recycle.selection.from_catalog import select_from_catalog

    scores: dict[str, float] = {}
    count = recycled_count(settings.k or request.default_k, request.with_target)  # k counts the target LoRA
    if settings.selection == "all" and settings.k is None:  # e.g. `average`: every accepted adapter
        ids = accepted_ids(request.db)
    elif count == 0:
        ids = []
    else:
        strategy = "random" if settings.selection == "all" else settings.selection
        ids, scores = select_from_catalog(request.db, strategy, count, settings.seed, model, tokenizer, task, device,
                                          request.target, metric=settings.selection_metric,
                                          split=settings.selection_split, precision=request.precision,
                                          workers=request.workers, log=log)
    return Pool(load_pool_adapters(request.db, ids), scores)


def k_shortfall(request: PoolRequest, settings: MergeSettings) -> str | None:
    """A warning when the catalog holds fewer accepted adapters than the selection asks for (all are then used)."""
    if request.db is None or request.ids or (settings.selection == "all" and settings.k is None):
        return None
    from lora_recycle.pool.catalog import accepted_ids

    k, available = settings.k or request.default_k, len(accepted_ids(request.db))
    if 0 < available < k:
        return f"warning: --k {k} but {request.db} has only {available} accepted adapters; using all {available}"
    return None


def finish_pool(adapters: list[LoraAdapter], target: LoraAdapter | None, random_init: bool, seed: int,
                noise_std: str = "pooled") -> list[LoraAdapter]:
    """Apply the random-init control (adapter i gets seed ``seed + i``; the std pooled per module over these
    recycled adapters, or each one's own), then put the untouched target LoRA first."""
    if random_init:
        from lora_recycle.merging.controls import random_init_pool

        adapters = random_init_pool(list(adapters), seed, noise_std)
    return [target, *adapters] if target is not None else list(adapters)


def assemble_pool(request: PoolRequest, settings: MergeSettings, model=None, tokenizer=None, task: Task | None = None,
                  device: torch.device | str = "cpu", explicit: list[LoraAdapter] | None = None,
                  log: Callable[[str], None] | None = None) -> Pool:
    """The whole pool of one merge; ``explicit`` passes adapters already read by ``explicit_adapters``."""
    read_target(request)
    chosen = selected_adapters(request, settings, model, tokenizer, task, device, log)
    adapters = (explicit if explicit is not None else explicit_adapters(request)) + chosen.adapters
    target = request.target if request.include_target else None
    return Pool(finish_pool(adapters, target, request.random_init, settings.seed, request.noise_std), chosen.scores,
                target.adapter_id if target is not None else None)
