"""Attach k adapters to a base model's linear layers and detach them again (the base stays unmodified)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from lora_recycle.adapters.lora import LoraAdapter, LoraModule, union_paths
from lora_recycle.adapters.untrusted import AdapterProblem
from lora_recycle.errors import UserError
from lora_recycle.merging.coefficients import (
    Activation,
    Granularity,
    activate,
    coefficient_groups,
    initial_coefficients,
)
from lora_recycle.merging.options import Composition, Strategy
from lora_recycle.models.checkpoint import BaseSkeleton
from lora_recycle.models.merged_linear import MergedLoraLinear


def _replace_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def find_linear(model: nn.Module, path: str, adapter_ids: list[str]) -> nn.Linear:
    """The base model's ``nn.Linear`` at a canonical path, or a UserError naming the adapter and module."""
    try:
        module = model.get_submodule(path)
    except AttributeError:
        module = None
    if isinstance(module, MergedLoraLinear):
        raise UserError(f"{path}: adapters are already attached to this model")
    if not isinstance(module, nn.Linear):
        raise UserError(f"adapter {', '.join(adapter_ids)}: module {path} is not a linear layer of the base model")
    return module


MAX_DELTA_RATIO = 100.0  # a merge input's ||s B A||_F / ||W||_F; the pool's outlier default is 1


def require_fits(model: nn.Module | BaseSkeleton | None, adapters: list[LoraAdapter],
                 max_ratio: float = MAX_DELTA_RATIO) -> None:
    """Refuse, with a UserError naming the adapter and module, an adapter that does not fit ``model``: a module
    that is no linear layer of it, another shape, or an update ``||s B A||_F`` that is not finite or above
    ``max_ratio`` times ``||W||_F`` (factors of 1e19 make NaN logits and exports that overflow). ``model`` may be
    a ``BaseSkeleton`` (the weights read from disk one at a time); without a model (fixed-coefficient maths on its
    own) only a non-finite update is refused."""
    skeleton = model if isinstance(model, BaseSkeleton) else None
    modules = skeleton.model if skeleton is not None else model
    norms: dict[str, float] = {}
    for adapter in adapters:
        for path, module in adapter.modules.items():
            if modules is None:
                if not math.isfinite(module.delta_norm()):
                    raise AdapterProblem("nonfinite", f"adapter {adapter.adapter_id}: module {path}'s update "
                                         "||s B A||_F overflows")
                continue
            weight = find_linear(modules, path, [adapter.adapter_id]).weight
            shape = (module.out_features, module.in_features)
            if shape != tuple(weight.shape):
                raise UserError(f"adapter {adapter.adapter_id}: module {path} has shape {shape}, the base model's "
                                f"is {tuple(weight.shape)}")
            if path not in norms:
                norms[path] = (skeleton.weight_norm(path) if skeleton is not None
                               else float(torch.linalg.vector_norm(weight.detach(), dtype=torch.float64)))
            ratio = module.delta_norm() / norms[path] if norms[path] else 0.0
            if not ratio <= max_ratio:  # NaN too
                raise AdapterProblem("outlier", f"adapter {adapter.adapter_id}: module {path} has ||delta||_F / "
                                     f"||W||_F = {ratio:.3g}, above the {max_ratio:g} a merge input may have")


class MergedModel:
    """A frozen base model with k adapters attached and one table of raw merging coefficients.

    ``raw`` has shape ``[groups, k]``; ``apply_coefficients()`` activates it and hands each merged
    linear its ``[k]`` slice, so one forward of ``model`` then computes the merged network.
    """

    def __init__(
        self,
        model: nn.Module,
        adapters: list[LoraAdapter],
        granularity: Granularity = "module",
        activation: Activation = "leaky_relu",
        init: str | float = "zero",
        strategy: Strategy = "auto",
        composition: Composition = "delta",
    ):
        if not adapters:
            raise UserError("no adapters to merge")
        self.model = model
        self.adapters = adapters
        self.activation: Activation = activation
        self.paths = union_paths(adapters)
        self.originals: dict[str, nn.Linear] = {}
        self.layers: dict[str, MergedLoraLinear] = {}
        for path in self.paths:
            owners = [a.adapter_id for a in adapters if path in a.modules]
            linear = find_linear(model, path, owners)
            loras: list[LoraModule | None] = [a.modules.get(path) for a in adapters]
            try:
                merged = MergedLoraLinear(linear, loras, strategy, composition)
            except ValueError as exc:
                self.detach()
                raise UserError(f"adapter {', '.join(owners)}: module {path}: {exc}") from None
            self.originals[path] = linear
            self.layers[path] = merged
            _replace_submodule(model, path, merged)
        presence = {path: [path in a.modules for a in adapters] for path in self.paths}
        self.groups = coefficient_groups(presence, granularity)
        device = next(iter(self.layers.values())).base.weight.device
        self.raw = nn.Parameter(initial_coefficients(self.groups, init).to(device))
        self.strategy_source = "rule"  # how the layers' strategy was decided: rule, timed or cached
        self._presence = self.groups.presence.to(device)
        self._index = {path: self.groups.module_group[path] for path in self.paths}

    @property
    def k(self) -> int:
        return len(self.adapters)

    def activated(self) -> torch.Tensor:
        """Activated coefficients ``[groups, k]`` (differentiable in ``raw``)."""
        return activate(self.raw, self.activation, self._presence)

    def apply_coefficients(self, values: torch.Tensor | None = None) -> None:
        """Hand each merged layer its coefficients: the activated ``raw``, or explicit ``[groups, k]`` values."""
        table = self.activated() if values is None else values
        for path, layer in self.layers.items():
            layer.coefficients = table[self._index[path]]

    def set_strategy(self, strategy: Strategy) -> None:
        for layer in self.layers.values():
            layer.strategy = strategy

    def calibrate(self, step: Callable[[], None], repeats: int = 1, tokens: int | None = None) -> dict[str, float]:
        """Resolve ``calibrate`` (and ``auto`` on an accelerator): time ``step`` (one forward+backward) under each
        candidate, keep the fastest.

        Candidates are the per-layer cost model and the three uniform strategies (hybrid only when factors are
        frozen). All are exact, so the choice changes speed, never numbers beyond float rounding. With
        ``tokens`` (the step's token count) the winner is cached per device and shapes
        (``lora_recycle.models.strategy_cache``) and a later merge of the same shapes reuses it untimed. On a
        CPU ``auto`` is left to the deterministic FLOP model. Returns the seconds per candidate (as cached).
        """
        from lora_recycle.models import strategy_cache

        layers = list(self.layers.values())
        strategies = {layer.strategy for layer in layers}
        device = layers[0].base.weight.device if layers else torch.device("cpu")
        if strategies != {"calibrate"} and not (strategies == {"auto"} and strategy_cache.times_auto(device)):
            return {}
        trainable_factors = any(layer.A_cat.requires_grad for layer in layers)
        key = None
        if tokens is not None:
            autocasting = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocasting else layers[0].base.weight.dtype
            shapes = [(layer.base.in_features, layer.base.out_features, layer.rank_sum) for layer in layers]
            key = strategy_cache.shape_key(device, dtype, tokens, shapes, trainable_factors)
            cached = strategy_cache.read_choice(key)
            if cached is not None:
                self.set_strategy(cached[0])
                self.strategy_source = "cached"
                return cached[1]
        candidates = ["auto", "factored", "materialized"] + ([] if trainable_factors else ["hybrid"])
        timings: dict[str, float] = {}
        self.set_strategy("auto")
        step()  # warm-up: allocator and kernels
        for candidate in candidates:
            self.set_strategy(candidate)
            best = float("inf")
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best = min(best, time.perf_counter() - start)
            timings[candidate] = best
        chosen = min(timings, key=timings.get)
        self.set_strategy(chosen)
        self.strategy_source = "timed"
        if key is not None:
            strategy_cache.write_choice(key, chosen, timings)
        return timings

    def __call__(self, **inputs):
        self.apply_coefficients()
        return self.model(**inputs)

    def coefficient_table(self, values: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
        """``{group name: {adapter id: activated coefficient}}`` for reports and model cards."""
        table = (self.activated() if values is None else values).detach().cpu()
        names = {}
        for g, key in enumerate(self.groups.keys):
            name = ".".join(str(part) for part in key) or "model"
            names[name] = {a.adapter_id: float(table[g, i]) for i, a in enumerate(self.adapters)}
        return names

    def merged_adapter(self, values: torch.Tensor | None = None, adapter_id: str = "merged") -> LoraAdapter:
        """The merge as one exact LoRA adapter: per module, factors concatenated and B scaled by ``c_i s_i``.

        Read from the attached layers, so jointly trained factors are exported as trained; rank
        columns whose weight is exactly zero are left out (exact, smaller rank).
        """
        self.apply_coefficients((self.activated() if values is None else values).detach())
        modules: dict[str, LoraModule] = {}
        for path, layer in self.layers.items():
            factors = layer.export_factors()
            if factors is not None:
                modules[path] = LoraModule(factors[0].cpu(), factors[1].cpu(), 1.0)
        return LoraAdapter(modules, adapter_id, self.adapters[0].base_model, {"use_rslora": False})

    def detach(self) -> None:
        """Put the original linear layers back; the base model is as it was before attaching."""
        for path, linear in self.originals.items():
            _replace_submodule(self.model, path, linear)
        self.originals.clear()
        self.layers.clear()


@contextmanager
def attached(model: nn.Module, adapters: list[LoraAdapter], **options):
    """``with attached(model, adapters) as merged:`` attaches, yields a MergedModel, then detaches."""
    merged = MergedModel(model, adapters, **options)
    try:
        yield merged
    finally:
        merged.detach()
