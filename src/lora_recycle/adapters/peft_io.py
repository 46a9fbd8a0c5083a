"""Read PEFT LoRA adapter directories into the canonical form, and write canonical adapters back.

Reading honours ``r``, ``lora_alpha``, ``use_rslora``, ``rank_pattern`` and ``alpha_pattern`` and the
key variants seen in the wild (with or without ``base_model.model.``, with ``.default.`` names).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import save_file

from lora_recycle.adapters.card import read_card_data
from lora_recycle.adapters.finite import require_finite, require_finite_tensors, require_representable
from lora_recycle.adapters.formats import (
    CONFIG_NAME,
    PICKLE_WEIGHTS_NAME,
    WEIGHTS_NAME,
    check_lora_config,
    read_adapter_config,
)
from lora_recycle.adapters.lora import LoraAdapter, LoraModule
from lora_recycle.adapters.lora_config import lora_numbers, lora_scale
from lora_recycle.adapters.paths import ambiguous_factor, canonical_path, coordinates, peft_key
from lora_recycle.adapters.patterns import pattern_value  # noqa: F401 - part of this module's API
from lora_recycle.adapters.untrusted import AdapterProblem
from lora_recycle.adapters.weights_file import load_pickle_weights, load_safetensors
from lora_recycle.errors import UserError
from lora_recycle.outputs import incomplete_reason

FORMAT_VERSION = 1
# vLLM accepts these LoRA ranks; a uniform rank from this set keeps an export servable.
SERVABLE_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def load_adapter_tensors(
    directory: Path, allow_pickle: bool = False, expected_sha256: str | None = None
) -> dict[str, torch.Tensor]:
    """Load the weight tensors of an adapter directory; pickle only when allowed, and then weights-only.

    ``expected_sha256`` (a pool catalog's record) refuses a weights file whose content has changed.
    """
    directory = Path(directory)
    weights = directory / WEIGHTS_NAME
    if weights.is_file():
        return load_safetensors(weights, expected_sha256)
    pickle_file = directory / PICKLE_WEIGHTS_NAME
    if pickle_file.is_file():
        if not allow_pickle:
            raise UserError(f"{pickle_file}: pickle weights are not loaded unless pickle is explicitly allowed")
        return load_pickle_weights(pickle_file, expected_sha256)
    raise UserError(f"{directory}: no {WEIGHTS_NAME} found")


def adapter_from_tensors(
    tensors: dict[str, torch.Tensor], config: dict, where: str, adapter_id: str = ""
) -> LoraAdapter:
    """Build a canonical adapter from PEFT-style tensors and config (scale per module from its patterns)."""
    check_lora_config(config, where)
    ambiguous = ambiguous_factor(tensors)
    if ambiguous is not None:
        raise AdapterProblem("ambiguous_key", f"{where}: {ambiguous}; refusing to pick one")
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        parsed = canonical_path(key)
        if parsed is None:
            raise UserError(f"{where}: tensor {key} is not a LoRA factor (unsupported adapter content)")
        path, factor = parsed
        factors.setdefault(path, {})[factor] = tensor
    numbers = lora_numbers(config, where)
    modules: dict[str, LoraModule] = {}
    for path, pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise UserError(f"{where}: module {path} lacks lora_{'B' if 'A' in pair else 'A'}")
        A, B = pair["A"], pair["B"]
        if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
            raise UserError(f"{where}: module {path} has inconsistent shapes A {tuple(A.shape)} B {tuple(B.shape)}")
        rank = numbers.module_rank(path, where)
        if rank != A.shape[0]:
            raise UserError(f"{where}: module {path} has rank {A.shape[0]} but the config says r={rank}")
        alpha = numbers.module_alpha(path, where)
        modules[path] = LoraModule(A=A, B=B, scale=lora_scale(alpha, rank, numbers.use_rslora))
    if not modules:
        raise UserError(f"{where}: no LoRA tensors")
    metadata = {
        "r": numbers.rank,
        "lora_alpha": numbers.alpha,
        "use_rslora": numbers.use_rslora,
        "target_modules": config.get("target_modules"),
    }
    adapter = LoraAdapter(modules, adapter_id, config.get("base_model_name_or_path"), metadata)
    require_finite(adapter, where)
    return adapter


def read_peft_adapter(
    directory: str | Path,
    allow_pickle: bool = False,
    adapter_id: str | None = None,
    expected_sha256: str | None = None,
) -> LoraAdapter:
    """Read a PEFT LoRA adapter directory into canonical form; raises UserError naming the problem.

    Every factor and scale must be finite; ``expected_sha256`` pins the weights file's content.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: adapter directory not found")
    if (incomplete := incomplete_reason(directory)) is not None:
        raise UserError(f"{directory}: {incomplete}")
    config = read_adapter_config(directory)
    check_lora_config(config, str(directory))
    tensors = load_adapter_tensors(directory, allow_pickle=allow_pickle, expected_sha256=expected_sha256)
    adapter = adapter_from_tensors(tensors, config, str(directory), adapter_id or str(directory))
    card = read_card_data(directory)
    adapter.metadata["license"] = card.get("license")
    adapter.metadata["card"] = card
    adapter.metadata["source"] = str(directory)
    return adapter


def uniform_rank(ranks: list[int], servable: bool = True) -> int:
    """The smallest uniform rank holding every module: the next vLLM-servable rank when one is large enough."""
    needed = max(ranks)
    if servable:
        for rank in SERVABLE_RANKS:
            if rank >= needed:
                return rank
    return needed


def target_modules_for(paths: list[str]) -> list[str]:
    """PEFT ``target_modules``: module type names when every touched layer has the same set, else full paths."""
    by_layer: dict[int, set[str]] = {}
    for path in paths:
        c = coordinates(path)
        by_layer.setdefault(c.layer, set()).add(c.module_type)
    sets = {frozenset(types) for types in by_layer.values()}
    if len(sets) == 1:
        return sorted(next(iter(sets)))
    return sorted(paths)


def write_peft_adapter(
    adapter: LoraAdapter,
    directory: str | Path,
    base_model: str,
    servable: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``adapter`` as a PEFT LoRA directory (``adapter_config.json`` + ``adapter_model.safetensors``).

    ``servable=True`` folds every scale into B and zero-pads to one uniform rank with ``lora_alpha = r``
    (exact; what vLLM/SGLang/llama.cpp want). ``servable=False`` keeps each module's rank and scale
    through ``rank_pattern`` / ``alpha_pattern``, for a faithful round trip.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = sorted(adapter.modules, key=lambda p: (coordinates(p), p))
    if not paths:
        raise ValueError("cannot write an adapter with no modules")
    use_rslora = bool(adapter.metadata.get("use_rslora", False)) and not servable
    require_representable(adapter, dtype, f"adapter for {directory}")
    if servable:
        rank, alpha, rank_pattern, alpha_pattern, tensors = _servable_tensors(adapter, paths, dtype)
    else:
        rank, alpha, rank_pattern, alpha_pattern, tensors = _faithful_tensors(adapter, paths, dtype, use_rslora)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "use_rslora": use_rslora,
        "use_dora": False,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "target_modules": target_modules_for(paths),
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "modules_to_save": None,
        "inference_mode": True,
    }
    require_finite_tensors(tensors, f"adapter for {directory}")
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file(tensors, directory / WEIGHTS_NAME, metadata={"format": "pt"})
    return directory


_Factors = tuple[int, float, dict[str, int], dict[str, float], dict[str, torch.Tensor]]


def _servable_tensors(adapter: LoraAdapter, paths: list[str], dtype: torch.dtype) -> _Factors:
    """One uniform rank, scales folded into B, zero-padded: ``(rank, alpha = rank, {}, {}, tensors)``."""
    rank = uniform_rank([adapter.modules[p].rank for p in paths])
    tensors: dict[str, torch.Tensor] = {}
    for path in paths:
        module = adapter.modules[path]
        pad = rank - module.rank
        A = torch.nn.functional.pad(module.A.to(dtype), (0, 0, 0, pad))
        B = torch.nn.functional.pad((module.scale * module.B).to(dtype), (0, pad))  # one rounding
        tensors[peft_key(path, "A")] = A.contiguous()
        tensors[peft_key(path, "B")] = B.contiguous()
    return rank, rank, {}, {}, tensors


def _faithful_tensors(adapter: LoraAdapter, paths: list[str], dtype: torch.dtype, use_rslora: bool) -> _Factors:
    """Each module's own rank and scale through ``rank_pattern`` / ``alpha_pattern`` (a faithful round trip)."""
    rank = Counter(adapter.modules[p].rank for p in paths).most_common(1)[0][0]
    alpha = float(adapter.metadata.get("lora_alpha") or rank)
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    tensors: dict[str, torch.Tensor] = {}
    default_scale = lora_scale(alpha, rank, use_rslora)
    for path in paths:
        module = adapter.modules[path]
        if module.rank != rank:
            rank_pattern[path] = module.rank
        if abs(lora_scale(alpha, module.rank, use_rslora) - module.scale) > 1e-12 * max(1.0, default_scale):
            # alpha that reproduces this module's scale under the same rule
            alpha_pattern[path] = module.scale * (module.rank**0.5 if use_rslora else module.rank)
        tensors[peft_key(path, "A")] = module.A.to(dtype).contiguous()
        tensors[peft_key(path, "B")] = module.B.to(dtype).contiguous()
    return rank, alpha, rank_pattern, alpha_pattern, tensors
