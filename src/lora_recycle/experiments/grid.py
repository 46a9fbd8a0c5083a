"""Expand an experiment into runs, each with a stable hash of everything that determines its result.

A run's hash does not depend on the rest of the grid, so adding a method or a seed to the config
keeps every finished run valid; changing a budget or a task's training data changes the hashes it
touches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Literal

from lora_recycle.experiments.config import ExperimentConfig, MethodSpec, ResolvedExperiment
from lora_recycle.recipe.presets import preset
from lora_recycle.recipe.settings import MergeSettings
from lora_recycle.selection.strategies import needs_target
from lora_recycle.tuning.target_config import TargetLoraConfig

RunKind = Literal["prompting", "target_lora", "merge"]
PoolKind = Literal["none", "recycled", "in_house"]


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: a baseline or a merge of one task and seed.

    ``k`` counts every merged adapter (None: all accepted ones): with ``with_target`` the target-task
    LoRA comes first and the top ``k - 1`` selected follow (paper Q4), in the recycled and in-house
    pools alike. ``metric`` scores the test split (None: the task's own).
    """

    kind: RunKind
    task: str
    seed: int
    method: str
    task_hash: str
    model_ref: str
    pool_ref: str
    dtype: str
    test_limit: int | None
    target_lora: TargetLoraConfig | None = None
    settings: MergeSettings | None = None
    k: int | None = None
    with_target: bool = False
    pool: PoolKind = "none"
    random_init: bool = False
    exclude_top: int = 0
    noise_std: str = "pooled"
    metric: str | None = None
    precision: str = "fp32"  # left out of the hash at fp32, so runs recorded before it keep theirs
    # the in-house pool's tasks and their data hashes (its LoRAs are trained on them); empty, and so left out
    # of the hash, for every other pool
    pool_tasks: tuple[tuple[str, str], ...] = ()
    # the learning rates of the method entry's ``lr: [a, b]`` (this run is one of them, its settings' lr), which
    # the report averages into one row; empty for one lr. Out of the hash: a run is the same run whatever its
    # siblings (recorded in the row's spec, so the report knows a (task, seed) that lacks one)
    lr_variants: tuple[float, ...] = ()

    @property
    def run_hash(self) -> str:
        """sha256 (16 hex digits) of the canonical JSON of every field but ``lr_variants``."""
        identity = {key: value for key, value in self.to_dict().items() if key != "lr_variants"}
        payload = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """A short human description, e.g. ``colour seed 0: ours k=5 +target``."""
        return f"{self.task} seed {self.seed}: {self.cell}"

    @property
    def cell(self) -> str:
        """The kind of cell across tasks and seeds, e.g. ``ours k=5 +target`` (``average all``, ``prompting``)."""
        parts = [self.method]
        if self.kind == "merge":
            parts.append("all" if self.k is None else f"k={self.k}")
        if self.lr_variants and self.settings is not None:
            parts.append(f"lr={self.settings.lr:g}")
        if self.pool == "in_house":
            parts.append("in-house" + (f" skip {self.exclude_top}" if self.exclude_top else ""))
        if self.random_init:
            parts.append("random-init")
        if self.with_target and self.kind == "merge":
            parts.append("+target")
        return " ".join(parts)

    def merge_settings(self) -> MergeSettings:
        """The merge's full settings (only for ``kind == "merge"``)."""
        if self.settings is None:
            raise ValueError(f"run {self.label} is not a merge")
        return self.settings

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data of every field (what the run hash and the results row hold)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if data["precision"] == "fp32":
            del data["precision"]
        for name in ("pool_tasks", "lr_variants"):
            if not data[name]:
                del data[name]
        data["target_lora"] = self.target_lora.identity() if self.target_lora is not None else {}
        data["settings"] = self.settings.to_dict() if self.settings is not None else None
        return data


def method_settings(spec: MethodSpec, config: ExperimentConfig) -> MergeSettings:
    """A method entry's settings: its preset, its overrides, then the step budget for adaptive methods."""
    defaults = {"selection_metric": config.selection_metric, "selection_split": config.selection_split}
    overrides = {**defaults, **spec.overrides()}
    one_over_k = overrides.get("coef") == "1/k"
    if one_over_k:
        overrides.pop("coef")
    settings = preset(spec.preset).with_overrides(**overrides)
    if one_over_k:  # coef None means 1/k per adapter
        settings = replace(settings, coef=None)
    if settings.tuning == "joint":  # pi-Tuning's fresh LoRA has the target-task LoRA's rank
        settings = settings.with_overrides(fresh_rank=config.budget.target_lora_rank)
    if settings.adaptive and spec.steps is None and config.budget.merge_steps is not None:
        settings = settings.with_overrides(steps=config.budget.merge_steps)
    return settings


def variant_settings(spec: MethodSpec, config: ExperimentConfig) -> list[MergeSettings]:
    """The entry's settings, one per learning rate of ``lr: [a, b]`` (just the one without a list)."""
    settings = method_settings(spec, config)
    return [settings.with_overrides(lr=lr) for lr in spec.lr_variants] or [settings]


def target_options(choice: bool | str) -> list[bool]:
    """``false`` / ``true`` / ``both`` as the list of with-target-LoRA values to run."""
    return [False, True] if choice == "both" else [bool(choice)]


def expand_runs(resolved: ResolvedExperiment, task_hashes: dict[str, str] | None = None) -> list[RunSpec]:
    """Every run of the experiment, baselines first, in a deterministic order without duplicates."""
    config = resolved.config
    hashes = task_hashes if task_hashes is not None else _task_hashes(resolved)
    budget = config.budget
    runs: list[RunSpec] = []

    def add(kind: RunKind, task: str, seed: int, method: str, **extra: Any) -> None:
        target = TargetLoraConfig(rank=budget.target_lora_rank, alpha=16.0, steps=budget.target_lora_steps,
                                  lr=budget.target_lora_lr, seed=seed, precision=config.precision)
        settings = extra.pop("settings", None)
        similarity = settings is not None and needs_target(settings.selection)  # compared with the target LoRA
        uses_target = (kind == "target_lora" or extra.get("with_target") or extra.get("pool") == "in_house"
                       or similarity)
        if settings is not None:
            settings = settings.with_overrides(seed=seed, k=extra.get("k"))
        if extra.get("pool") == "in_house":
            extra["pool_tasks"] = tuple((t, hashes[t]) for t in resolved.in_house_tasks if t != task)
        runs.append(RunSpec(kind, task, seed, method, hashes[task], resolved.model_ref,
                            resolved.pool_ref if kind == "merge" else "", config.dtype, budget.test_limit,
                            target if uses_target else None, settings, metric=config.metric,
                            precision=config.precision, **extra))

    for task in resolved.target_tasks:
        for seed in config.seeds:
            if config.baselines:
                add("prompting", task, seed, "prompting")
                add("target_lora", task, seed, "target_lora")
            for spec in config.methods:
                if seed not in config.seeds_of(spec):
                    continue
                variants = variant_settings(spec, config)
                ks = [None] if variants[0].selection == "all" else (spec.k or config.k)
                choice = config.include_target_lora if spec.include_target_lora is None else spec.include_target_lora
                for k in ks:
                    for with_target in target_options(choice):
                        for settings in variants:
                            add("merge", task, seed, spec.label, settings=settings, k=k, with_target=with_target,
                                pool="recycled", lr_variants=spec.lr_variants)
            for control in config.controls.random_init or []:
                spec = config.method(control.method)
                if seed not in config.seeds_of(control, spec.seeds):
                    continue
                for k in control.k or spec.k or config.k:
                    for with_target in target_options(control.include_target_lora):
                        for settings in variant_settings(spec, config):
                            add("merge", task, seed, spec.label, settings=settings, k=k, with_target=with_target,
                                pool="recycled", random_init=True, noise_std=control.noise_std,
                                lr_variants=spec.lr_variants)
            in_house = config.controls.in_house
            if in_house is not None and seed in config.seeds_of(in_house):
                spec = config.method(in_house.method)
                cells = [(k, 0) for k in in_house.k] + [(in_house.exclude_k, m) for m in in_house.exclude_top]
                for k, m in dict.fromkeys(cells):
                    for settings in variant_settings(spec, config):
                        add("merge", task, seed, spec.label, settings=settings.with_overrides(selection="evaluation"),
                            k=k, with_target=True, pool="in_house", exclude_top=m, lr_variants=spec.lr_variants)
    if resolved.only_methods:  # a slice: the baselines its merges are compared with stay in
        runs = [run for run in runs if run.kind != "merge" or run.method in resolved.only_methods]
    unique = {run.run_hash: run for run in runs}
    return list(unique.values())


def _task_hashes(resolved: ResolvedExperiment) -> dict[str, str]:
    from lora_recycle.tasks import load_task

    names = dict.fromkeys([*resolved.target_tasks, *resolved.in_house_tasks])
    return {name: load_task(resolved.tasks[name]).content_hash() for name in names}


def inputs_fingerprint(resolved: ResolvedExperiment) -> str:
    """sha256 (16 hex digits) of what run hashes name only by reference: the base model's config and weight
    files and every accepted pool adapter's weights (tasks are in the run hashes, the in-house pool's too).

    A results file records it, so resuming on a rebuilt or re-scanned pool is refused instead of mixing runs;
    a changed task only makes its runs new ones (``experiment prune`` drops the old).
    """
    from lora_recycle.pool import Catalog

    model = resolved.model
    weights = sorted((p.name, p.stat().st_size) for p in model.iterdir()
                     if p.suffix in (".safetensors", ".bin", ".gguf") and p.is_file())
    with Catalog(resolved.db, create=False) as catalog:
        pool = sorted((row["id"], row["sha256"]) for row in catalog.rows(status="accepted"))
    payload = json.dumps({"model_config": (model / "config.json").read_text(encoding="utf-8"), "weights": weights,
                          "pool": pool}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
