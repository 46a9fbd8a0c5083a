"""The Arrow recipe: assemble the pool (selection as for any method), fit it to PEFT's rules, write, score.

With a target-task LoRA, it is one of the k experts (the target first, then the top k - 1 selected),
the paper's convention for "with the target-task LoRA".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.errors import UserError
from lora_recycle.routing.arrow import ArrowSettings, routed, write_arrow_dir
from lora_recycle.routing.pool import ArrowPool, ModuleRule, prepare_arrow_pool
from lora_recycle.tasks.scoring import EvalResult

DEFAULT_K = 30  # "all accepted adapters", capped as every catalog selection is


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


def select_experts(db: Path, selection: str, k: int | None, seed: int, model, tokenizer, task, device,
                   target: LoraAdapter | None, exclude: set[str]) -> tuple[list[str], list[str], dict[str, float]]:
    """``(chosen, reserve, scores)``: catalog ids for ``k`` (default 30) experts minus one slot for the target.

    ``all`` takes every accepted adapter when they fit, else a seeded random ``k``; other strategies
    rank as for any merge (the chosen ids are the same as a merge's). ``reserve`` holds the rest of
    the ranking, in order: it replaces adapters the module rule drops. Ids in ``exclude`` (the
    general adapters) are never experts.
    """
    from lora_recycle.selection.from_catalog import accepted_ids, select_from_catalog

    slots = (k or DEFAULT_K) - (1 if target is not None else 0)
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


def read_general_adapters(values: list[str], db: Path | None) -> list[LoraAdapter]:
    """``--general-adapters``: each value an adapter directory, or else a catalog id of ``--db``."""
    from lora_recycle.adapters import read_peft_adapter

    out = []
    for value in values:
        if Path(value).is_dir():
            out.append(read_peft_adapter(value, adapter_id=f"general:{Path(value).name}"))
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
    from lora_recycle.tasks.scoring import evaluate_task

    if settings.use_gks and not general:
        raise UserError(f"{method} subtracts general knowledge: give --general-adapters DIR_OR_ID [...]")
    if general and not settings.use_gks:
        raise UserError(f"--general-adapters is only used by arrow_gks, not {method}")
    if load is not None and reserve:
        pool = fill_dropped(experts, general, list(reserve), load, settings.modules, required_ids)
    else:
        pool = prepare_arrow_pool(experts, general, settings.modules, required_ids)
    if sources is None:
        sources = [{"id": a.adapter_id, "license": a.metadata.get("license"), "source": a.metadata.get("source")}
                   for a in [*pool.experts, *pool.general]]
    write_arrow_dir(pool, out, base_model, method, settings, sources, overwrite=overwrite)
    evaluation = None
    if evaluate_split is not None and task is not None:
        with routed(model, out) as scored:
            evaluation = evaluate_task(scored, tokenizer, task, evaluate_split, device, limit)
    return RoutedOutcome(Path(out), pool.summary(), settings, evaluation)


def route_catalog(model, tokenizer, task, db: Path | str, settings, out: str | Path, target: LoraAdapter | None = None,
                  random_init: bool = False, device: torch.device | str = "cpu", evaluate_split: str | None = "test",
                  limit: int | None = None) -> RoutedOutcome:
    """Arrow over a catalog per ``settings`` (a routed method's ``MergeSettings``): the runner's and demo's call.

    Selection as for any merge (target first, then the top k - 1), general adapters by catalog id,
    the random-init control on every non-target expert (replacements too), then ``route_adapters``.
    """
    from lora_recycle.merging.controls import random_init_like
    from lora_recycle.pool import load_pool_adapters

    arrow = ArrowSettings.from_settings(settings)
    general = load_pool_adapters(db, list(settings.general_adapters)) if settings.general_adapters else []
    chosen, reserve, scores = select_experts(Path(db), settings.selection, settings.k, settings.seed, model, tokenizer,
                                             task, device, target, set(settings.general_adapters))
    experts = load_pool_adapters(db, chosen)

    def load(adapter_id: str) -> LoraAdapter:
        adapter = load_pool_adapters(db, [adapter_id])[0]
        return random_init_like(adapter, settings.seed + len(chosen) + reserve.index(adapter_id)) if random_init \
            else adapter

    if random_init:
        experts = [random_init_like(a, settings.seed + i) for i, a in enumerate(experts)]
    if target is not None:
        experts = [target, *experts]
    from lora_recycle.models.loading import base_model_name

    outcome = route_adapters(model, tokenizer, task, experts, general, arrow, settings.method, out,
                             base_model_name(model),
                             evaluate_split, device, (target.adapter_id,) if target else (), limit=limit,
                             reserve=reserve, load=load, overwrite=True)  # the runner's and demo's own folders
    outcome.scores = {i: scores[i] for i in outcome.pool["experts"] if i in scores}
    return outcome
