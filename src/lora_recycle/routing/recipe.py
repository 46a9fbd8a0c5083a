"""The Arrow recipe, a peer of the merge recipe: the same ``PoolRequest`` and ``MergeSettings`` in, the pool
assembled (selection as for any method), fitted to PEFT's rules, written and optionally scored.

``run_route`` is the ``merge --method arrow|arrow_gks`` command as one call (``recipe/run.py:run_merge``'s
peer); ``route_pool`` is its core on a loaded model, which the experiment runner and the demo call.
With a target-task LoRA, it is one of the k experts (the target first, then the top k - 1 selected),
the paper's convention for "with the target-task LoRA".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lora_recycle.errors import UserError
from lora_recycle.recipe.pool import PoolRequest, explicit_adapters, read_folder, read_target
from lora_recycle.recipe.run import ExportOptions, check_request, open_inputs
from lora_recycle.recipe.settings import MergeSettings
from lora_recycle.routing.arrow import ArrowSettings, routed, write_arrow_dir

if TYPE_CHECKING:  # torch: imported by the functions that route, after run_route has checked its inputs
    import torch

    from lora_recycle.adapters.lora import LoraAdapter
    from lora_recycle.pool.base_spec import BaseModelSpec
    from lora_recycle.routing.pool import ArrowPool, ModuleRule
    from lora_recycle.tasks.scoring import EvalResult


@dataclass
class RoutedOutcome:
    """Where the routed library was written, which adapters it routes, and its scores if evaluated."""

    out: Path
    pool: dict
    settings: ArrowSettings
    evaluation: EvalResult | None = None
    scores: dict[str, float] = field(default_factory=dict)

    def summary(self, method: str) -> dict:
        """JSON-ready summary, in the shape of ``merge --json``."""
        data = {"out": str(self.out), "method": method, "selected": self.pool["experts"],
                "general": self.pool["general"], "dropped": self.pool["dropped"], "routing": self.pool,
                "arrow": self.settings.peft_config(len(self.pool["experts"])), "scores": self.scores,
                "coefficients": None}
        if self.evaluation is not None:
            data["evaluation"] = self.evaluation.to_dict()
        return data


def select_experts(db: Path, selection: str, k: int, seed: int, model, tokenizer, task, device,
                   target: LoraAdapter | None, exclude: set[str]) -> tuple[list[str], list[str], dict[str, float]]:
    """``(chosen, reserve, scores)``: catalog ids for ``k`` experts minus one slot for the target.

    ``all`` takes every accepted adapter when they fit, else a seeded random ``k``; other strategies
    rank as for any merge (the chosen ids are the same as a merge's). ``reserve`` holds the rest of
    the ranking, in order: it replaces adapters the module rule drops. Ids in ``exclude`` (the
    general adapters) are never experts.
    """
    from lora_recycle.pool.catalog import accepted_ids
    from lora_recycle.selection.from_catalog import select_from_catalog

    slots = k - (1 if target is not None else 0)
    accepted = [i for i in accepted_ids(db) if i not in exclude]
    if slots <= 0 or not accepted:
        return [], [], {}
    if selection == "all" and len(accepted) <= slots:
        return accepted, [], {}
    strategy = "random" if selection == "all" else selection
    # every ranking is prefix-consistent (a seeded permutation, or scores), so the first ``slots`` are a merge's
    ranked, scores = select_from_catalog(db, strategy, len(accepted) + len(exclude), seed, model, tokenizer, task,
                                         device, target)
    ranked = [i for i in ranked if i not in exclude]
    return ranked[:slots], ranked[slots:], {i: scores[i] for i in ranked if i in scores}


def fill_dropped(experts: list[LoraAdapter], general: list[LoraAdapter], reserve: list[str],
                 load: Callable[[str], LoraAdapter], rule: ModuleRule, required_ids: tuple[str, ...]) -> ArrowPool:
    """The Arrow pool of ``experts``, with adapters the module rule drops replaced from ``reserve`` in order.

    Replacements must cover the routed modules, so the pool keeps its size when the catalog allows.
    """
    from lora_recycle.routing.pool import prepare_arrow_pool

    pool = prepare_arrow_pool(experts, general, rule, required_ids)
    missing = len(pool.dropped)
    if not missing or not reserve:
        return pool
    kept = [a for a in experts if a.adapter_id not in pool.dropped]
    routed_paths = set(pool.paths)
    for adapter_id in reserve:
        if missing == 0:
            break
        candidate = load(adapter_id)
        if routed_paths <= set(candidate.modules):
            kept.append(candidate)
            missing -= 1
    refilled = prepare_arrow_pool(kept, general, rule, required_ids)
    refilled.dropped = {**pool.dropped, **refilled.dropped}
    return refilled


def check_general(use_gks: bool, given: bool, method: str) -> None:
    """GenKnowSub needs general adapters to subtract, and nothing else takes them."""
    if use_gks and not given:
        raise UserError(f"{method} subtracts general knowledge: give --general-adapters DIR_OR_ID [...]")
    if given and not use_gks:
        raise UserError(f"--general-adapters is only used by arrow_gks, not {method}")


def read_general_adapters(values: list[str], db: Path | None, base: BaseModelSpec | None = None) -> list[LoraAdapter]:
    """``--general-adapters``: each value an adapter directory (with ``base``, checked as ``pool scan`` checks
    it), or else a catalog id of ``--db``."""
    out = []
    for value in values:
        if Path(value).is_dir():
            out.append(read_folder(PoolRequest(base=base), value, f"general:{Path(value).name}"))
        elif db is not None:
            from lora_recycle.pool import load_pool_adapters

            out += load_pool_adapters(db, [value])
        else:
            raise UserError(f"--general-adapters {value}: not an adapter directory (catalog ids need --db)")
    return out


def route_adapters(model, tokenizer, task, experts: list[LoraAdapter], general: list[LoraAdapter],
                   settings: ArrowSettings, method: str, out: str | Path, base_model: str,
                   evaluate_split: str | None = None, device: torch.device | str = "cpu",
                   required_ids: tuple[str, ...] = (), sources: list[dict] | None = None,
                   limit: int | None = None, reserve: list[str] = (),
                   load: Callable[[str], LoraAdapter] | None = None, overwrite: bool = False) -> RoutedOutcome:
    """Fit the pool to Arrow, write ``out`` (what PEFT reloads) and optionally score it on a split.

    Adapters the module rule drops are replaced from ``reserve`` (catalog ids read with ``load``); a
    non-empty ``out`` is replaced only with ``overwrite``.
    """
    from lora_recycle.models.inject import require_fits
    from lora_recycle.routing.pool import prepare_arrow_pool
    from lora_recycle.tasks.scoring import evaluate_task

    check_general(settings.use_gks, bool(general), method)
    require_fits(model, [*experts, *general])
    if load is not None and reserve:
        pool = fill_dropped(experts, general, list(reserve), load, settings.arrow_modules, required_ids)
    else:
        pool = prepare_arrow_pool(experts, general, settings.arrow_modules, required_ids)
    if sources is None:
        sources = [{"id": a.adapter_id, "license": a.metadata.get("license"), "source": a.metadata.get("source")}
                   for a in [*pool.experts, *pool.general]]
    write_arrow_dir(pool, out, base_model, method, settings, sources, overwrite=overwrite)
    evaluation = None
    if evaluate_split is not None and task is not None:
        with routed(model, out) as scored:
            evaluation = evaluate_task(scored, tokenizer, task, evaluate_split, device, limit)
    return RoutedOutcome(Path(out), pool.summary(), settings, evaluation)


def route_pool(model, tokenizer, task, request: PoolRequest, settings: MergeSettings, out: str | Path,
               evaluate_split: str | None = None, device: torch.device | str = "cpu", limit: int | None = None,
               explicit: list[LoraAdapter] | None = None, base_model: str | None = None,
               overwrite: bool = True) -> RoutedOutcome:
    """Arrow per ``settings`` (a routed method's ``MergeSettings``) over the requested pool, on a loaded model (or its
    ``BaseSkeleton`` when neither selection nor evaluation runs it: ``runs_base_model``).

    The explicit adapters (``explicit``: already read), then, from a catalog without ids, ``k`` selected
    as for any merge; the random-init control on every non-target expert (replacements too); the
    target-task LoRA first; general adapters are directories or catalog ids. ``outcome.scores`` holds
    every selection score. ``out`` is replaced whole (atomically) only with ``overwrite`` (the runner's and demo's
    own folders; the CLI passes ``--overwrite``).
    """
    from lora_recycle.merging.controls import random_init_like
    from lora_recycle.models.loading import base_model_name
    from lora_recycle.pool import load_pool_adapters

    general = read_general_adapters(list(settings.general_adapters), request.db, request.base)
    experts = list(explicit) if explicit is not None else explicit_adapters(request)
    read_target(request)
    target = request.target if request.include_target else None
    chosen, reserve, scores = [], [], {}
    if request.db is not None and not request.ids:
        chosen, reserve, scores = select_experts(Path(request.db), settings.selection, settings.k or request.default_k,
                                                 settings.seed, model, tokenizer, task, device, target,
                                                 {a.adapter_id for a in general})
        experts += load_pool_adapters(request.db, chosen)
    offset = settings.seed + len(experts)  # replacements are randomised too, each with its own seed

    def load(adapter_id: str) -> LoraAdapter:
        adapter = load_pool_adapters(request.db, [adapter_id])[0]
        return random_init_like(adapter, offset + reserve.index(adapter_id)) if request.random_init else adapter

    if request.random_init:
        experts = [random_init_like(a, settings.seed + i) for i, a in enumerate(experts)]
    if target is not None:  # the target-task LoRA is one of the k, first, never randomised
        experts = [target, *experts]
    outcome = route_adapters(model, tokenizer, task, experts, general, ArrowSettings.from_settings(settings),
                             settings.method, out, base_model or base_model_name(model), evaluate_split, device,
                             (target.adapter_id,) if target else (), limit=limit, reserve=reserve,
                             load=load if request.db is not None else None, overwrite=overwrite)
    outcome.scores = scores
    return outcome


def run_route(model_dir: Path, task_dir: Path | None, request: PoolRequest, settings: MergeSettings,
              export: ExportOptions, device: str = "cpu", dtype: str = "float32",
              log: Callable[[str], None] | None = None) -> dict:
    """Route per ``settings`` over the requested pool, write the Arrow library to ``export.out`` (optionally
    scored on ``export.evaluate_split``) and return the JSON summary, in the shape of ``run_merge``'s."""
    from lora_recycle.models.checkpoint import BaseSkeleton
    from lora_recycle.models.loading import base_model_name
    from lora_recycle.outputs import check_out_dir
    from lora_recycle.recipe.run import runs_base_model

    unused = {"--merge-into-base": export.merge_into_base, "--save-dtype": export.save_dtype,
              "--base-model-id": export.base_model_id}
    given = [flag for flag, value in unused.items() if value not in (None, False)]
    if given:
        raise UserError(f"{given[0]} does not apply to {settings.method} (routing learns and merges nothing)")
    if settings.selection != "all" and request.db is None:
        raise UserError("--selection needs --db POOL.db")
    check_request(request, settings, task_dir)
    check_general(ArrowSettings.from_settings(settings).use_gks, bool(settings.general_adapters), settings.method)
    check_out_dir(export.out, export.overwrite)  # before any model or adapter loads
    inputs = open_inputs(model_dir, task_dir, request, settings, export.evaluate_split, device, dtype, log,
                         run_model=runs_base_model(request, settings, export))
    modules = inputs.model.model if isinstance(inputs.model, BaseSkeleton) else inputs.model
    outcome = route_pool(inputs.model, inputs.tokenizer, inputs.task, request, settings, export.out,
                         export.evaluate_split, inputs.device, explicit=inputs.explicit,
                         base_model=base_model_name(modules) or str(model_dir), overwrite=export.overwrite)
    return outcome.summary(settings.method)
