"""``MergeSettings``: every choice of one merge, the one schema the CLI, the presets and experiments share.

Each field carries its bounds and help text as metadata, so the experiment schema (``MethodSpec``) is
derived from it rather than re-declared. ``selection`` and ``tuning`` name entries of their registries
(``selection/strategies.py``, ``tuning/tuners.py``); ``method`` names a merge method (``recipe/presets.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from lora_recycle.merging.options import Activation, Composition, Granularity, Init, Strategy

Metric = Literal["loglik", "exact_match"]  # tasks/scoring.py METRICS
SelectionSplit = Literal["train", "labelled"]  # labelled: train + validation (the paper's selection split)
FreshLora = Literal["auto", "target", "modal", "none"]  # pi-Tuning's fresh LoRA (recipe/merge.py joint_fresh_lora)
MAX_ABS_COEF = 100.0  # fixed coefficients in the literature are 0.3-1 (negation: -1); beyond this, nonsense


def _opt(default: Any, help: str, **bounds: float | bool) -> Any:
    return field(default=default, metadata={"help": help, **bounds})


@dataclass(frozen=True)
class MergeSettings:
    """Every choice of one merge; ``adaptive=False`` means fixed coefficients (no tuning)."""

    method: str
    adaptive: bool
    selection: str = _opt("all", "How adapters are picked from a catalog (a selection strategy).")
    tuning: str = _opt("gradient", "How coefficients are learned (a tuner).")
    k: int | None = _opt(None, "How many adapters to select.", ge=1)
    composition: Composition = _opt("delta", "delta: sum of c_i B_i A_i; lorahub: (sum c_i B_i)(sum c_i A_i).")
    granularity: Granularity = _opt("module", "Which modules share a coefficient: model, layer, sublayer, module.")
    activation: Activation = _opt("leaky_relu", "Activation of the raw coefficients: softmax, leaky_relu, linear.")
    init: Init = _opt("zero", "Initial raw coefficients: zero, uniform (1/k), a number, or first (the first "
                      "adapter at 1, the rest at 0: with the target-task LoRA, the merge starts as it).")
    steps: int = _opt(100, "Tuning steps (gradient) or evaluations (gradient-free).", ge=1)
    lr: float = _opt(5e-2, "Learning rate of gradient tuning.", gt=0)
    batch_size: int = _opt(8, "Examples per tuning step.", ge=1)
    eval_every: int = _opt(10, "Validate every N steps (the best snapshot is kept).", ge=1)
    seed: int = _opt(0, "Seed of every random choice.")
    strategy: Strategy = _opt("auto", "How merged layers compute: auto, calibrate, factored, materialized, hybrid.")
    prune: float = _opt(0.6, "TIES/DARE: fraction of each task vector dropped (density = 1 - prune).", ge=0, lt=1)
    coef: float | None = _opt(None, "Non-adaptive coefficient C per adapter (None: 1/k).", ge=-MAX_ABS_COEF,
                              le=MAX_ABS_COEF)
    max_rank: int | None = _opt(None, "Compress the export to this rank (default: the exact update, any rank).",
                                ge=1)
    max_error: float | None = _opt(None, "Per module the smallest rank within this relative Frobenius error, then "
                                   "one vLLM-servable rank for the file (merging/rank_budget.py).", ge=0, lt=1)
    exact_export: bool = _opt(False, "Keep the exact merge even above rank 512 (default: compress it to max_error "
                              "0.05, so vLLM serves it); still a PEFT adapter, e.g. for evaluation.", omit_default=True)
    keep_start: bool = _opt(False, "Let the untrained start win the best-validation snapshot (paper: never).")
    # the dataclass default stays "target" (always one fresh LoRA) so that every other method's settings, and so
    # its run hashes, are unchanged; the pi_tuning preset sets "auto" (recipe/presets.py)
    fresh_lora: FreshLora = _opt(
        "target", "pi-Tuning's fresh LoRA: auto (pi_tuning's preset: one of the target-task LoRA's shape and "
        "scaling only when the target-task LoRA is not in the pool, as the authors' code runs it), target (always "
        "one of that shape), modal (always one of the selected adapters' most common rank, scale 1) or none.")
    fresh_rank: int = _opt(64, "Rank of the fresh LoRA (capped like the target-task LoRA's).", ge=1)
    fresh_alpha: float = _opt(16.0, "lora_alpha of the fresh LoRA (scale alpha / rank).", gt=0)
    # Refining (beyond the paper; tuning/refine.py): left out of to_dict() at their defaults, so existing run
    # hashes stay valid.
    refine_steps: int = _opt(0, "After merging, fine-tune the merge as one LoRA for this many steps (0: no).", ge=0,
                             omit_default=True)
    refine_lr: float = _opt(1e-4, "Learning rate of refining the merge's factors.", gt=0, omit_default=True)
    refine_rank: int = _opt(64, "Rank the merge is compressed to before refining.", ge=1, omit_default=True)
    selection_metric: Metric | None = _opt(
        None, "Evaluation selection scores by loglik or exact_match (None: the task's metric).")
    selection_split: SelectionSplit = _opt(
        "train", "Evaluation selection scores on train or labelled (train + validation, the paper's).")
    # Routing methods only (arrow, arrow_gks: routing/); left out of to_dict() at their defaults, so the run
    # hashes of every other method do not depend on them.
    top_k: int = _opt(3, "Arrow: experts routed per token.", ge=1, routing=True)
    router_temperature: float = _opt(1.0, "Arrow: softmax temperature of the router.", gt=0, routing=True)
    rng_seed: int | None = _opt(None, "Arrow: seed of the prototypes' power iteration (None: seed).", routing=True)
    arrow_modules: Literal["cover", "intersect"] = _opt(
        "cover", "Arrow: how mixed target modules are routed: cover or intersect.", routing=True)
    general_adapters: tuple[str, ...] = _opt((), "arrow_gks: general LoRAs to subtract (directories or catalog ids).",
                                             routing=True)

    def __post_init__(self) -> None:
        problem = init_problem(self.init, self.activation)
        if problem:
            from lora_recycle.errors import UserError

            raise UserError(f"{self.method}: {problem}")

    def with_overrides(self, **overrides) -> MergeSettings:
        """A copy with the non-None overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, in field order (routing-only and refine fields only when not at their defaults)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)
                if not ((f.metadata.get("routing") or f.metadata.get("omit_default"))
                        and getattr(self, f.name) == f.default)}


def init_problem(init: Init, activation: Activation) -> str | None:
    """Why ``init`` cannot start ``activation`` (None if it can): a softmax cannot put exactly 1 on one adapter."""
    if init == "first" and activation == "softmax":
        return "init first (a coefficient of 1 on the first adapter) needs the leaky_relu or linear activation, " \
               "not softmax"
    return None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# Fields a method entry or the CLI may change; method and adaptive come from the preset, seed and k from the run.
CHOICE_FIELDS = tuple(f.name for f in fields(MergeSettings) if f.name not in ("method", "adaptive", "seed", "k"))
