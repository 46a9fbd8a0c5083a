"""The merge-method registry: each method's preset settings, paper reference and declared parameters.

Presets are data, not classes (STYLE: variants are settings): ``ours`` is evaluation selection,
gradient tuning, module granularity, leaky-ReLU, zero init, 100 steps at lr 5e-2. Adding a method is
one registry line here; a fixed-coefficient one holds its per-module merge (``merging/module_merge.py``).
The CLI's ``--method`` choices, the experiment schema and the README's methods table read this registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from lora_recycle.merging.module_merge import AVERAGE, DARE_LINEAR, DARE_TIES, TASK_ARITHMETIC, TIES, TSV, ModuleMerge
from lora_recycle.recipe.settings import MergeSettings
from lora_recycle.registry import Registry

# Parameters a user may set per kind of method (the rest of MergeSettings is the preset's business).
SELECTION_PARAMS = ("selection", "k", "selection_metric", "selection_split")
EXPORT_PARAMS = ("max_rank", "max_error", "exact_export")
ADAPTIVE_PARAMS = (*SELECTION_PARAMS, "tuning", "composition", "granularity", "activation", "init", "steps", "lr",
                   "batch_size", "eval_every", "strategy", *EXPORT_PARAMS, "keep_start", "refine_steps",
                   "refine_lr", "refine_rank")
JOINT_PARAMS = (*ADAPTIVE_PARAMS, "fresh_lora", "fresh_rank", "fresh_alpha")
DENSE_PARAMS = (*SELECTION_PARAMS, "coef", "prune", *EXPORT_PARAMS)
FACTORED_PARAMS = (*SELECTION_PARAMS, "coef", "max_error", "exact_export")
ROUTING_PARAMS = ("selection", "k", "top_k", "router_temperature", "rng_seed", "arrow_modules")


@dataclass(frozen=True)
class MergeMethod:
    """A named merge: its preset settings, where it comes from, what a user may set, and its kind.

    ``merge`` is the fixed-coefficient per-module merge of the method; None means a coefficient merge
    of the adapters' factors (learned when the preset is adaptive).
    """

    name: str
    settings: MergeSettings
    paper: str
    params: tuple[str, ...]
    merge: ModuleMerge | None = None
    routed: bool = False  # routes per token over the pool (routing/): no single merged adapter exists

    @property
    def adaptive(self) -> bool:
        return self.settings.adaptive

    @property
    def factored(self) -> bool:
        """True when the merge works on LoRA factors; else it merges dense per-module deltas (exported by SVD)."""
        return self.merge is None or self.merge.factored


METHODS: Registry[MergeMethod] = Registry("merge method")


def register_method(name: str, paper: str, params: tuple[str, ...], merge: ModuleMerge | None = None,
                    routed: bool = False, **settings) -> MergeMethod:
    """Register ``name`` with its preset ``MergeSettings(method=name, **settings)``."""
    return METHODS.add(name, MergeMethod(name, MergeSettings(name, **settings), paper, params, merge, routed))


# Paper Table 1 and appendix C.1; k defaults to 30 (20 for pi-Tuning) when selecting from a catalog.
register_method("ours", "Liu, Je et al., The Appeal and Reality of Recycling LoRAs with Adaptive Merging (sec. 3)",
                ADAPTIVE_PARAMS, adaptive=True, selection="evaluation", tuning="gradient",
                granularity="module", activation="leaky_relu", init="zero", steps=100, lr=5e-2)
register_method("adamerging", "Yang et al. 2023, AdaMerging (arXiv:2310.02575)", ADAPTIVE_PARAMS,
                adaptive=True, selection="random", tuning="gradient", granularity="module", activation="linear",
                init="uniform", steps=100, lr=5e-2)
register_method("pi_tuning", "Wu et al. 2023, pi-Tuning (ICML 2023)", JOINT_PARAMS,
                adaptive=True, selection="quasi_fim", tuning="joint", k=20, granularity="module",
                activation="softmax", init="zero", steps=100, lr=1e-4, fresh_lora="auto")
register_method("lorahub", "Huang et al. 2024, LoraHub (COLM 2024)", ADAPTIVE_PARAMS,
                adaptive=True, selection="random", tuning="gradient_free", granularity="model", activation="linear",
                init="zero", steps=100, composition="lorahub")
# average: the uniform (1/k) coefficient mix of the factors, merged per module; granularity, activation and init
# describe that mix and keep its settings (and every recorded run's hash) as they were before it was per-module
register_method("average", "simple averaging (Wortsman et al. 2022, model soups)",
                (*SELECTION_PARAMS, *EXPORT_PARAMS), merge=AVERAGE, adaptive=False, selection="all", tuning="none",
                granularity="model", activation="linear", init="uniform")
# Non-adaptive methods on per-module dense deltas (paper appendix D); C = 0.3 and p = 0.6 were
# among the stable TIES settings of the paper's Table 4.
register_method("task_arithmetic", "Ilharco et al. 2023, task arithmetic (ICLR 2023)",
                (*SELECTION_PARAMS, "coef", "max_rank", "max_error"),
                merge=TASK_ARITHMETIC, adaptive=False, selection="random", tuning="none", coef=0.3)
register_method("ties", "Yadav et al. 2023, TIES-Merging (NeurIPS 2023)", DENSE_PARAMS,
                merge=TIES, adaptive=False, selection="random", tuning="none", prune=0.6, coef=0.3)
register_method("tsv", "Gargiulo et al. 2025, Task Singular Vectors (CVPR 2025)", FACTORED_PARAMS,
                merge=TSV, adaptive=False, selection="random", tuning="none")
register_method("dare_linear", "Yu et al. 2024, DARE (ICML 2024)", DENSE_PARAMS,
                merge=DARE_LINEAR, adaptive=False, selection="random", tuning="none", prune=0.6, coef=0.3)
register_method("dare_ties", "Yu et al. 2024, DARE (ICML 2024) with TIES sign election", DENSE_PARAMS,
                merge=DARE_TIES, adaptive=False, selection="random", tuning="none", prune=0.6, coef=0.3)

# Zero-shot routing baselines through PEFT's own implementation (routing/): every accepted adapter up to k = 30.
register_method("arrow", "Ostapenko et al. 2024, Arrow routing (arXiv:2405.11157), PEFT's create_arrow_model",
                ROUTING_PARAMS, routed=True, adaptive=False, selection="all", tuning="none")
register_method("arrow_gks", "Arrow after GenKnowSub (ACL 2025, 2025.acl-short.54), PEFT's create_arrow_model",
                (*ROUTING_PARAMS, "general_adapters"), routed=True, adaptive=False, selection="all",
                tuning="none")


def is_routed(name: str) -> bool:
    """True when the method routes per token (no single merged adapter; see ``routing/``)."""
    return name in METHODS and METHODS.lookup(name).routed


def preset(name: str) -> MergeSettings:
    """The settings of a named method; unknown names get a one-line error suggesting close ones."""
    return METHODS.lookup(name).settings
