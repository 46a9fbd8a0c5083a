"""The tuner registry: how an adaptive merge learns its coefficients (``MergeSettings.tuning``).

Entries name their implementation as ``"module:function"`` so the CLI can list them without importing
torch. A tuner is ``tune(merged, tokenizer, task, config, device) -> CoefficientFit``; ``config`` is a
``tuning.loop.TuneConfig`` (the loop's budget, typed), made from the merge's settings at the recipe's edge.
Adding a tuner is one file plus one ``register_tuner`` line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lora_recycle.registry import Registry, resolve


@dataclass(frozen=True)
class Tuner:
    """A named way to learn coefficients; ``tune`` None means fixed coefficients (non-adaptive methods).

    ``trains_factors``: the adapters' A/B train too, and a fresh LoRA may join the pool (pi-Tuning; the
    setting ``fresh_lora`` says when, ``recipe/merge.py`` adds it).
    """

    name: str
    help: str
    tune: str | Callable | None = None
    trains_factors: bool = False

    def function(self) -> Callable:
        return resolve(self.tune)


TUNERS: Registry[Tuner] = Registry("tuning")


def register_tuner(name: str, help: str, tune: str | Callable | None, trains_factors: bool = False) -> Tuner:
    return TUNERS.add(name, Tuner(name, help, tune, trains_factors))


register_tuner("none", "fixed coefficients", None)
register_tuner("gradient", "AdamW on the answer-token loss, cosine schedule; the lowest-validation-loss snapshot "
               "among the evaluations during training is kept (the start too only with keep_start)",
               "lora_recycle.tuning.gradient:tune_gradient")
register_tuner("joint", "gradient tuning of the coefficients and every adapter's A/B; without the target-task LoRA "
               "in the pool plus one fresh LoRA (A ~ N(0, 0.01), B = 0) of its shape and scaling (pi-Tuning)",
               "lora_recycle.tuning.gradient:tune_joint", trains_factors=True)
register_tuner("gradient_free", "nevergrad NGOpt, raw coefficients in [-1.5, 1.5], objective = loss on all examples "
               "+ 0.05 mean abs w (LoraHub)", "lora_recycle.tuning.gradient_free:tune")


def adaptive_tuners() -> tuple[str, ...]:
    """Names of the tuners that learn something (what ``--tuning`` accepts)."""
    return tuple(name for name, tuner in TUNERS.items() if tuner.tune is not None)
