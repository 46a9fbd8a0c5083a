"""Canonical module paths and their coordinates (layer, sublayer, module type).

A canonical path is the base model's own module name, e.g. ``model.layers.3.self_attn.q_proj``:
no PEFT ``base_model.model.`` prefix and no adapter name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

Sublayer = Literal["attn", "mlp"]

ATTENTION_TYPES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TYPES = ("gate_proj", "up_proj", "down_proj")
# The seven projections a Llama / Mistral / Qwen2 / Qwen3 / Gemma decoder layer has, in a stable order.
MODULE_TYPES = ATTENTION_TYPES + MLP_TYPES

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn|mlp)\.(\w+)$")
_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True, order=True)
class Coordinates:
    """Where a module sits: ``(layer, sublayer, module_type)``; granularity groups are defined on these."""

    layer: int
    sublayer: Sublayer
    module_type: str


def coordinates(path: str) -> Coordinates:
    """Return the coordinates of a canonical path such as ``model.layers.3.mlp.up_proj``.

    >>> coordinates("model.layers.3.mlp.up_proj")
    Coordinates(layer=3, sublayer='mlp', module_type='up_proj')
    """
    match = _LAYER_RE.search(path)
    if match is None:
        raise ValueError(f"not a decoder-layer module path: {path!r}")
    layer, block, module_type = match.groups()
    return Coordinates(int(layer), "attn" if block == "self_attn" else "mlp", module_type)


def canonical_path(peft_key: str) -> tuple[str, str] | None:
    """Split a PEFT tensor key into ``(canonical module path, "A" | "B")``; None if not a LoRA factor.

    Accepts keys with or without the ``base_model.model.`` prefix and with an adapter name
    (``lora_A.default.weight``).

    >>> canonical_path("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight")
    ('model.layers.0.self_attn.q_proj', 'A')
    """
    parts = peft_key.split(".")
    for index, part in enumerate(parts):
        if part in ("lora_A", "lora_B"):
            tail = parts[index + 1 :]
            if tail not in (["weight"],) and not (len(tail) == 2 and tail[1] == "weight"):
                return None
            path = ".".join(parts[:index])
            if path.startswith(_PEFT_PREFIX):
                path = path[len(_PEFT_PREFIX) :]
            return path, part[-1]
    return None


def peft_key(path: str, factor: str) -> str:
    """The key PEFT writes for a canonical path's factor ``"A"`` or ``"B"``."""
    return f"{_PEFT_PREFIX}{path}.lora_{factor}.weight"


def ambiguous_factor(
    keys: Iterable[str], parse: Callable[[str], tuple[str, str] | None] = canonical_path
) -> str | None:
    """Why two of ``keys`` name the same factor of one module, or None if no two do.

    ``lora_A.weight`` beside ``lora_A.default.weight``, or a key with and without ``base_model.model.``, are two
    copies of one factor: whichever a reader kept would decide what is merged, so neither may be chosen.

    >>> ambiguous_factor(["m.lora_A.weight", "base_model.model.m.lora_A.weight"])
    "tensors 'm.lora_A.weight' and 'base_model.model.m.lora_A.weight' are both lora_A of module m"
    """
    seen: dict[tuple[str, str], str] = {}
    for key in keys:
        parsed = parse(key)
        if parsed is None:
            continue
        if parsed in seen:
            return f"tensors {seen[parsed]!r} and {key!r} are both lora_{parsed[1]} of module {parsed[0]}"
        seen[parsed] = key
    return None
