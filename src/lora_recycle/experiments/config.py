"""The experiment file: a YAML document validated by a typed schema, then resolved against a pool.

Two steps, so that mistakes in the file show up before anything heavy happens:

- ``load_config(path)`` parses and validates the file alone (unknown keys, wrong types, unknown presets);
- ``resolve_experiment(config)`` finds the model, catalog and tasks (building the mini-hub of a
  ``hub: {profile: ...}`` if needed) and checks what needs the pool (k larger than the pool);
  ``check_hub_plan(config)`` makes the same checks against a profile's plan, without building it.

Every error is one line naming the file and the field, e.g. ``smoke.yaml: field methods[1].preset: ...``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from lora_recycle.errors import UserError
from lora_recycle.recipe.choices import params_problem
from lora_recycle.recipe.presets import METHODS
from lora_recycle.recipe.settings import (
    CHOICE_FIELDS,
    MAX_ABS_COEF,
    MergeSettings,
    Metric,
    SelectionSplit,
    init_problem,
)
from lora_recycle.recipe.target import path_name_problem
from lora_recycle.selection.strategies import STRATEGIES
from lora_recycle.tuning.tuners import TUNERS
from lora_recycle.user_files import read_yaml

TargetLoraChoice = Literal[False, True, "both"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubRef(_Strict):
    """The built-in mini-hub of a profile (built or reused with ``build_hub``)."""

    profile: str = "tiny"
    seed: int = 0
    cache_dir: Path | None = None


class _MethodEntry(_Strict):
    """A preset, optionally with design choices overridden; ``name`` labels it in results and reports.

    The overridable fields are derived from ``MergeSettings`` (see ``MethodSpec`` below), so a new
    setting is declared once, there.
    """

    preset: str
    name: str | None = None
    k: list[int] | None = None
    seeds: list[int] | None = None  # a subset of the experiment's seeds (a study's budget cut), default all
    include_target_lora: TargetLoraChoice | None = None  # default: the experiment's

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"preset": data} if isinstance(data, str) else data

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown preset {value!r}; choose one of: {', '.join(sorted(METHODS))}")
        return value

    @field_validator("k", "seeds", mode="before")
    @classmethod
    def _k_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("lr", mode="after", check_fields=False)
    @classmethod
    def _lr_variants(cls, value: Any) -> Any:
        values = value if isinstance(value, list) else [] if value is None else [value]
        if any(not 0 < lr < math.inf for lr in values):
            raise ValueError("Input should be greater than 0 (and finite)")
        if not isinstance(value, list):
            return value
        if not value or len(set(value)) != len(value):
            raise ValueError("a list of learning rates needs at least one, each once")
        return value[0] if len(value) == 1 else value  # one learning rate: the same runs as a plain number

    @field_validator("selection", check_fields=False)
    @classmethod
    def _known_selection(cls, value: str | None) -> str | None:
        if value is not None and value not in STRATEGIES:
            raise ValueError(f"unknown selection {value!r}; choose one of: {', '.join(STRATEGIES)}")
        return value

    @field_validator("tuning", check_fields=False)
    @classmethod
    def _known_tuning(cls, value: str | None) -> str | None:
        if value is not None and value not in TUNERS:
            raise ValueError(f"unknown tuning {value!r}; choose one of: {', '.join(TUNERS)}")
        return value

    @model_validator(mode="after")
    def _declared_params(self) -> Any:
        problem = params_problem(self.preset, {**self.overrides(), **({"lr": self.lr} if self.lr_variants else {})})
        if problem:
            raise ValueError(problem)
        preset_settings = METHODS[self.preset].settings
        problem = init_problem(preset_settings.init if self.init is None else self.init,
                               preset_settings.activation if self.activation is None else self.activation)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def label(self) -> str:
        return self.name or self.preset

    @property
    def lr_variants(self) -> tuple[float, ...]:
        """The learning rates of ``lr: [a, b]`` (one run each, reported as one row: their mean); () for one lr."""
        lr = getattr(self, "lr", None)
        return tuple(lr) if isinstance(lr, list) else ()

    def overrides(self) -> dict[str, Any]:
        """The design choices this entry changes in its preset (a list of learning rates: see ``lr_variants``)."""
        skip = {"preset", "name", "k", "seeds", "include_target_lora", *(("lr",) if self.lr_variants else ())}
        return {key: value for key, value in self.model_dump().items() if key not in skip and value is not None}


def _override_fields() -> dict[str, Any]:
    """Every ``MergeSettings`` choice as an optional field with the same type, bounds and help."""
    hints = get_type_hints(MergeSettings)
    out: dict[str, Any] = {}
    for f in dataclass_fields(MergeSettings):
        if f.name in CHOICE_FIELDS:
            bounds = {key: f.metadata[key] for key in ("ge", "gt", "le", "lt") if key in f.metadata}
            out[f.name] = (hints[f.name] | None, Field(default=None, description=f.metadata.get("help"), **bounds))
    # paper Table 4 sweeps C over {1, 0.3, 1/k}: "1/k" restores the 1/k default of a preset with its own C
    coef = Annotated[float, Field(ge=-MAX_ABS_COEF, le=MAX_ABS_COEF, allow_inf_nan=False)]
    out["coef"] = (coef | Literal["1/k"] | None, Field(default=None, description=out["coef"][1].description))
    # the paper reports pi-Tuning as the mean over two learning rates: ``lr: [1.0e-4, 5.0e-5]`` runs each
    # (bounds checked by MethodSpec._lr_variants: a union would report a list's bad value as "not a number")
    out["lr"] = (float | list[float] | None, Field(default=None, description=out["lr"][1].description
                                                   + " A list runs each and reports their mean as one row."))
    return out


MethodSpec = create_model("MethodSpec", __base__=_MethodEntry, __module__=__name__, **_override_fields())


class RandomInitControl(_Strict):
    """Merge noise of the same shape and std as the selected adapters (the target-task LoRA kept intact)."""

    method: str = "ours"
    k: list[int] | None = None
    include_target_lora: TargetLoraChoice = True
    noise_std: Literal["pooled", "per_adapter"] = "pooled"  # pooled per module over the recycled adapters
    seeds: list[int] | None = None  # default: the seeds of the method it controls


class InHouseControl(_Strict):
    """Replace the recycled pool by the other target tasks' target-task LoRAs (paper Figure 5).

    ``tasks`` names the tasks whose target-task LoRAs form the in-house pool (default: the target tasks;
    ``all``: every task of the hub or of ``tasks:``).

    ``k`` counts the target-task LoRA, so each merge takes the top ``k - 1`` in-house LoRAs by
    evaluation; the ablation skips the top ``m`` of them for each ``m`` in ``exclude_top`` at
    ``exclude_k`` (paper: k = 10, m in 5, 10, 15, 20).
    """

    method: str = "ours"
    tasks: list[str] | Literal["all"] | None = None
    k: list[int] = Field(default_factory=lambda: [5, 10])
    exclude_top: list[int] = Field(default_factory=list)
    exclude_k: int = Field(default=10, ge=2)
    seeds: list[int] | None = None  # default: the experiment's

    @field_validator("k")
    @classmethod
    def _k_at_least_two(cls, value: list[int]) -> list[int]:
        if any(k < 2 for k in value):
            raise ValueError("in-house k counts the target-task LoRA and must be at least 2")
        return value


class Controls(_Strict):
    """The random-init control (one mapping, or a list: one per method it controls) and the in-house pool."""

    random_init: list[RandomInitControl] | None = None
    in_house: InHouseControl | None = None

    @field_validator("random_init", "in_house", mode="before")
    @classmethod
    def _true_means_defaults(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value

    @field_validator("random_init", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value


class Budget(_Strict):
    """Per-run budgets that make small studies fit a CPU (None keeps the preset's or paper's value)."""

    merge_steps: int | None = Field(default=None, ge=1)
    target_lora_steps: int = Field(default=400, ge=1)
    target_lora_rank: int = Field(default=64, ge=1)
    target_lora_lr: float = Field(default=3e-4, gt=0)
    test_limit: int | None = Field(default=None, ge=1)


class ExperimentConfig(_Strict):
    """One study: where the model, pool and tasks are, and the grid of methods x k x seeds x controls."""

    name: str = "experiment"
    hub: HubRef | None = None
    model: Path | None = None
    base_model_id: str | None = None
    db: Path | None = None
    tasks: dict[str, Path] | None = None
    target_tasks: list[str] | None = None
    methods: list[MethodSpec] = Field(default_factory=lambda: [MethodSpec(preset="ours")])
    k: list[int] = Field(default_factory=lambda: [30])
    seeds: list[int] = Field(default_factory=lambda: [0])
    include_target_lora: TargetLoraChoice = "both"
    baselines: bool = True
    controls: Controls = Field(default_factory=Controls)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # compute precision of training, merging and scoring: bf16 autocast with fp32 master weights (auto: where
    # the hardware has bf16 natively), as the mini-hub's adapters were trained; fp32 keeps existing run hashes
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    threads: int | None = Field(default=None, ge=1)  # torch CPU threads per run (1 is fastest on busy small CPUs)
    budget: Budget = Field(default_factory=Budget)
    # test scoring: loglik (multiple choice by choice log-likelihood) or exact_match (greedy generation,
    # the paper's); None: each task's own metric
    metric: Metric | None = None
    # evaluation-based selection (and in-house ranking) unless a method sets its own
    selection_metric: Metric | None = None
    selection_split: SelectionSplit = "train"

    @field_validator("k", "seeds", mode="before")
    @classmethod
    def _scalar_to_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("k")
    @classmethod
    def _positive_k(cls, value: list[int]) -> list[int]:
        if not value or any(k < 1 for k in value):
            raise ValueError("k values must be at least 1")
        return value

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_list(cls, value: Any) -> Any:
        if isinstance(value, list):  # a list of task directories: named by their folder
            return {Path(str(p)).name: p for p in value}
        return value

    @field_validator("tasks")
    @classmethod
    def _plain_task_names(cls, value: dict[str, Path] | None) -> dict[str, Path] | None:
        for name in value or {}:  # a name becomes part of cache paths: never ../ or a hidden file
            if (problem := path_name_problem(name)) is not None:
                raise ValueError(f"task name {problem}")
        return value

    @model_validator(mode="after")
    def _where_from(self) -> ExperimentConfig:
        explicit = [self.model, self.db, self.tasks]
        if self.hub is None and any(v is None for v in explicit):
            raise ValueError("give either hub: {profile: ...} or all of model, db and tasks")
        if self.hub is not None and any(v is not None for v in explicit):
            raise ValueError("give either hub or model/db/tasks, not both")
        labels = [m.label for m in self.methods]
        settings: dict[str, tuple] = {}
        for m in self.methods:  # a name may repeat to run more k or seeds of the same settings
            if settings.setdefault(m.label, (m.preset, m.overrides(), m.lr_variants)) != (m.preset, m.overrides(),
                                                                                       m.lr_variants):
                raise ValueError(f"method name {m.label!r} is used for different settings (set name:)")
        random_init = self.controls.random_init or []
        named = [(control, f"random_init[{i}]" if len(random_init) > 1 else "random_init")
                 for i, control in enumerate(random_init)] + [(self.controls.in_house, "in_house")]
        for control, field in named:
            if control is not None and control.method not in labels and control.method not in METHODS:
                raise ValueError(f"controls.{field}.method {control.method!r} is neither a method here nor a preset")
        subsets = [(m.seeds, f"methods[{i}].seeds") for i, m in enumerate(self.methods)]
        subsets += [(c.seeds, f"controls.{field}.seeds") for c, field in named if c is not None]
        for seeds, field in subsets:
            stray = sorted(set(seeds or []) - set(self.seeds))
            if stray:
                raise ValueError(f"{field}: seed(s) {', '.join(map(str, stray))} are not among the experiment's "
                                 f"seeds ({', '.join(map(str, self.seeds))})")
        return self

    def seeds_of(self, entry: Any, default: list[int] | None = None) -> list[int]:
        """The seeds a method entry or control runs on (its own subset, else ``default``, else all)."""
        return entry.seeds if entry.seeds is not None else (default if default is not None else self.seeds)

    def method(self, label: str) -> MethodSpec:
        """The (first) method entry called ``label``, or the bare preset of that name."""
        for spec in self.methods:
            if spec.label == label:
                return spec
        return MethodSpec(preset=label)

    def content_hash(self) -> str:
        """A stable hash of the validated configuration (paths as written)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-before[_from_name(), MethodSpec]",) or "[" in str(part) or "-" in str(part):
            continue  # pydantic's validator tags are noise for a user
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def parse_config(data: Any, source: str) -> ExperimentConfig:
    """Validate an already-parsed mapping; errors name ``source`` and the first offending field."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of settings at the top level")
    try:
        return ExperimentConfig(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        controls = data.get("controls")
        if loc[:3] == ("controls", "random_init", 0) and isinstance(controls, dict) and isinstance(
                controls.get("random_init"), dict):  # written as one mapping: name it as written
            loc = loc[:2] + loc[3:]
        raise UserError(f"{source}: field {_field_path(loc)}: {_message(first)}") from None
    except TypeError as exc:
        raise UserError(f"{source}: {exc}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML; relative paths in it are taken from the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: experiment file not found")
    config = parse_config(read_yaml(path), str(path))
    return _anchor_paths(config, path.parent.resolve())


def _anchor_paths(config: ExperimentConfig, root: Path) -> ExperimentConfig:
    def anchor(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else root / p)

    update: dict[str, Any] = {"model": anchor(config.model), "db": anchor(config.db)}
    if config.tasks is not None:
        update["tasks"] = {name: anchor(p) for name, p in config.tasks.items()}
    if config.hub is not None and config.hub.cache_dir is not None:
        update["hub"] = config.hub.model_copy(update={"cache_dir": anchor(config.hub.cache_dir)})
    return config.model_copy(update=update)


@dataclass(frozen=True)
class ResolvedExperiment:
    """Where everything is, once the config has been checked against the pool."""

    config: ExperimentConfig
    source: str
    model: Path
    base_model_id: str | None
    db: Path
    tasks: dict[str, Path]
    target_tasks: list[str]
    pool_size: int
    in_house_tasks: list[str]
    model_ref: str
    pool_ref: str
    only_methods: tuple[str, ...] = ()  # ``--method`` slice: these methods' merge runs (baselines always kept)


def resolve_experiment(config: ExperimentConfig, source: str = "experiment", build: bool = True) -> ResolvedExperiment:
    """Locate model, catalog and tasks (building the mini-hub if asked) and check k against the pool.

    ``build=False`` (``experiment status``, ``prune``: commands that only read) refuses a hub that is not built
    yet with one line, instead of starting its build (the `full` hub trains for tens of minutes).
    """
    from lora_recycle.pool.catalog import accepted_ids

    if config.hub is not None:
        from lora_recycle.minihub.hub import build_hub, hub_root

        root = hub_root(config.hub.profile, config.hub.cache_dir, config.hub.seed)
        if not build and not (root / "manifest.json").is_file():
            raise UserError(f"{source}: the {config.hub.profile} mini-hub (seed {config.hub.seed}) is not built in "
                            f"{root.parent}: `experiment run` builds it, or `lora-recycle hub build --profile "
                            f"{config.hub.profile}`")

        hub = build_hub(config.hub.profile, config.hub.cache_dir, config.hub.seed)
        model, base_id, db, tasks = hub.base_model, hub.base_model_id, hub.catalog, dict(hub.tasks)
        default_targets = list(hub.target_tasks)
        model_ref = pool_ref = f"minihub:{config.hub.profile}:seed{config.hub.seed}"
    else:
        model, base_id, db, tasks = config.model, config.base_model_id, config.db, dict(config.tasks or {})
        default_targets = sorted(tasks)
        model_ref, pool_ref = str(model), str(db)
    if not (Path(model) / "config.json").is_file():
        raise UserError(f"{source}: field model: {model} is not a transformers model directory")
    for name, directory in tasks.items():
        if not (Path(directory) / "task.yaml").is_file():
            raise UserError(f"{source}: field tasks.{name}: {directory} is not a task directory")
    try:
        pool_size = len(accepted_ids(db))
    except UserError as exc:
        raise UserError(f"{source}: field db: {exc}") from None
    targets, in_house_tasks = _check_world(config, source, sorted(tasks), default_targets, pool_size)
    return ResolvedExperiment(config, source, Path(model), base_id, Path(db), {t: Path(tasks[t]) for t in tasks},
                              targets, pool_size, in_house_tasks, model_ref, pool_ref)


def check_hub_plan(config: ExperimentConfig, source: str = "experiment") -> tuple[list[str], list[str]]:
    """Check a ``hub:`` config against its profile's plan without building the hub: every task it names is in
    the suite and every k fits the profile's pool. Returns the target tasks and the in-house pool's tasks."""
    from lora_recycle.minihub.hub import get_profile
    from lora_recycle.minihub.tasks import TARGET_TASKS, TASK_NAMES

    if config.hub is None:
        raise UserError(f"{source}: names no hub profile (hub: {{profile: ...}}); resolve it against its pool")
    profile = get_profile(config.hub.profile)
    return _check_world(config, source, TASK_NAMES, list(TARGET_TASKS), profile.pool_size)


def _check_world(config: ExperimentConfig, source: str, tasks: list[str], default_targets: list[str],
                 pool_size: int) -> tuple[list[str], list[str]]:
    """The target and in-house tasks, once every task named is among ``tasks`` and every k fits the pool."""
    targets = list(config.target_tasks or default_targets)
    unknown = [t for t in targets if t not in tasks]
    if unknown:
        raise UserError(f"{source}: field target_tasks: unknown task(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(tasks))}")
    in_house = config.controls.in_house
    in_house_tasks: list[str] = []
    if in_house is not None:
        in_house_tasks = sorted(tasks) if in_house.tasks == "all" else list(in_house.tasks or targets)
    unknown = [t for t in in_house_tasks if t not in tasks]
    if unknown:
        raise UserError(f"{source}: field controls.in_house.tasks: unknown task(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(tasks))}")
    others = min((len([o for o in in_house_tasks if o != t]) for t in targets), default=0)
    _check_against_pool(config, source, pool_size, others)
    return targets, in_house_tasks


def _check_against_pool(config: ExperimentConfig, source: str, pool_size: int, others: int) -> None:
    def too_large(field: str, values: list[int], limit: int) -> None:
        for k in values:
            if k > limit:
                raise UserError(f"{source}: field {field}: k={k} is larger than the pool ({limit} accepted adapters)")

    too_large("k", config.k, pool_size)
    for i, spec in enumerate(config.methods):
        if spec.k is not None:
            too_large(f"methods[{i}].k", spec.k, pool_size)
    for random_init in config.controls.random_init or []:
        if random_init.k is not None:
            too_large("controls.random_init.k", random_init.k, pool_size)
    in_house = config.controls.in_house
    if in_house is not None:
        for k in in_house.k:
            if k - 1 > others:
                raise UserError(f"{source}: field controls.in_house.k: k={k} needs {k - 1} other target-task LoRAs; "
                                f"the in-house pool has {others}")
        for m in in_house.exclude_top:
            if m + in_house.exclude_k - 1 > others:
                raise UserError(f"{source}: field controls.in_house.exclude_top: skipping the top {m} leaves fewer "
                                f"than {in_house.exclude_k - 1} of the {others} other target-task LoRAs")


def config_summary(config: ExperimentConfig) -> dict[str, Any]:
    """The configuration as plain JSON data (for results metadata)."""
    return json.loads(config.model_dump_json())
