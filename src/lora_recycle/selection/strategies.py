"""The selection-strategy registry: how k adapters are picked from a pool catalog (``MergeSettings.selection``).

A strategy either chooses without scores (``choose(ids, k, seed) -> ids``) or scores every accepted
adapter (``score(name, inputs, ids) -> {id: score}``, cached per task or target LoRA in the catalog)
and keeps the top k. ``needs`` says what scoring uses: ``model`` (base model and task) or ``target``
(the target-task LoRA). Implementations are named as ``"module:function"`` so the CLI lists the
strategies without importing torch. Adding a strategy is one file plus one ``register_strategy`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lora_recycle.registry import Registry, resolve

Needs = Literal["nothing", "model", "target"]


@dataclass(frozen=True)
class ScoringInputs:
    """What a scoring strategy may use; ``load(id)`` reads one pool adapter."""

    model: Any
    tokenizer: Any
    task: Any
    device: Any
    target: Any
    load: Callable[[str], Any]
    metric: str | None = None  # evaluation: loglik or exact_match (None: the task's)
    split: str = "train"  # evaluation: train or labelled (train + validation)


@dataclass(frozen=True)
class SelectionStrategy:
    name: str
    help: str
    needs: Needs = "nothing"
    choose: str | Callable | None = None
    score: str | Callable | None = None

    @property
    def scored(self) -> bool:
        return self.score is not None


STRATEGIES: Registry[SelectionStrategy] = Registry("selection")


def register_strategy(name: str, help: str, needs: Needs = "nothing", choose: str | Callable | None = None,
                      score: str | Callable | None = None) -> SelectionStrategy:
    if (choose is None) == (score is None):
        raise ValueError(f"selection {name!r}: give exactly one of choose= or score=")
    return STRATEGIES.add(name, SelectionStrategy(name, help, needs, choose, score))


def choose_all(ids: list[str], k: int, seed: int) -> list[str]:
    """Every accepted adapter (``k`` and ``seed`` are ignored)."""
    return list(ids)


def choose(strategy: SelectionStrategy, ids: list[str], k: int, seed: int) -> list[str]:
    return resolve(strategy.choose)(ids, k, seed)


def score(strategy: SelectionStrategy, inputs: ScoringInputs, ids: list[str]) -> dict[str, float]:
    return resolve(strategy.score)(strategy.name, inputs, ids)


def catalog_strategies() -> tuple[str, ...]:
    """Strategies that pick k adapters (what ``--selection`` / ``select --strategy`` accept besides ``all``)."""
    return tuple(name for name in STRATEGIES if name != "all")


def needs_target(name: str) -> bool:
    """Does this selection compare adapters with the target-task LoRA?"""
    return name in STRATEGIES and STRATEGIES[name].needs == "target"


register_strategy("all", "every accepted adapter", choose=choose_all)
register_strategy("random", "k adapters uniformly at random (seeded)",
                  choose="lora_recycle.selection.random:select_random")
register_strategy("evaluation", "top k by accuracy on the task's training examples (or all labelled ones, by "
                  "exact match: --selection-split labelled --selection-metric exact_match)", "model",
                  score="lora_recycle.selection.evaluation:strategy_scores")
register_strategy("loss", "top k by lowest answer-token loss on the task's training examples (or all labelled ones: "
                  "--selection-split labelled); ranks adapters even where every accuracy is zero", "model",
                  score="lora_recycle.selection.evaluation:loss_strategy_scores")
for _name, _help in (("cosine", "cosine similarity"), ("clamp", "cosine (negative products clamped to 0)"),
                     ("abs", "cosine of absolute values"), ("quasi_fim", "cosine of elementwise squares")):
    register_strategy(_name, f"top k by {_help} to the target-task LoRA", "target",
                      score="lora_recycle.selection.similarity:strategy_scores")
