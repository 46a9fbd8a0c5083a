"""What validation needs to know about the base model: its name (and aliases), module shapes and norms.

Shapes come from the local model directory's ``config.json``; weight norms are read lazily from its
safetensors files (our own header parser, numpy, a block at a time: no torch), one tensor at a time, and
remembered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from lora_recycle.adapters.paths import MODULE_TYPES
from lora_recycle.errors import UserError
from lora_recycle.pool.header import TensorInfo, checkpoint_files, stored_norm
from lora_recycle.user_files import read_json

# Suffixes of quantised or re-packaged mirrors that hold the same weights as the original.
_MIRROR_SUFFIXES = re.compile(
    r"(-(unsloth|bnb|4bit|8bit|int4|int8|fp8|gptq|awq|gguf|mlx|hf|quantized|q4|q8|dynamic|exl2))+$"
)


def normalise_model_name(name: str) -> str:
    """Reduce a model id or local path to what identifies its weights.

    Keeps the final name only, lowercased, without a ``meta-`` prefix or mirror suffixes.

    >>> normalise_model_name("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit")
    'llama-3.1-8b-instruct'
    """
    final = str(name).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()
    final = final.removeprefix("meta-")
    return _MIRROR_SUFFIXES.sub("", final)


def projection_shapes(config: dict, where: str = "config.json") -> dict[str, tuple[int, int]]:
    """``module type -> (out, in)`` of a Llama-style decoder layer from a transformers config."""
    try:
        hidden = int(config["hidden_size"])
        inter = int(config["intermediate_size"])
        heads = int(config["num_attention_heads"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: missing or bad field {exc}") from None
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    q, kv = heads * head_dim, kv_heads * head_dim
    return {
        "q_proj": (q, hidden),
        "k_proj": (kv, hidden),
        "v_proj": (kv, hidden),
        "o_proj": (hidden, q),
        "gate_proj": (inter, hidden),
        "up_proj": (inter, hidden),
        "down_proj": (hidden, inter),
    }


def module_paths(num_layers: int, shapes: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Canonical path -> (out, in) for every projection of every layer."""
    block = {t: "self_attn" if t in MODULE_TYPES[:4] else "mlp" for t in MODULE_TYPES}
    return {f"model.layers.{i}.{block[t]}.{t}": shapes[t] for i in range(num_layers) for t in MODULE_TYPES}


@dataclass
class BaseModelSpec:
    """The base model the pool is for: accepted names, module shapes, and (lazily) weight norms."""

    name: str
    shapes: dict[str, tuple[int, int]]
    aliases: tuple[str, ...] = ()
    num_layers: int = 0
    weights: dict[str, Path] = field(default_factory=dict)
    _norms: dict[str, float] = field(default_factory=dict, repr=False)
    _headers: dict[Path, dict[str, TensorInfo]] = field(default_factory=dict, repr=False)

    def accepts(self, model_name: str) -> bool:
        """True if ``model_name`` names this base model (or a configured alias / mirror of it)."""
        names = {normalise_model_name(n) for n in (self.name, *self.aliases)}
        return normalise_model_name(model_name) in names

    @property
    def has_weights(self) -> bool:
        return bool(self.weights)

    def weight_norm(self, path: str) -> float | None:
        """``||W||_F`` of a module (float64), read once from safetensors; None if the weights are absent."""
        if path not in self._norms:
            name = f"{path}.weight"
            file = self.weights.get(name)
            if file is None:
                return None
            norm = stored_norm(file, name, self._headers)
            if norm is None:  # e.g. an fp8 checkpoint: torch reads those
                with safe_open(file, framework="pt") as handle:
                    norm = float(handle.get_tensor(name).double().norm())
            self._norms[path] = norm
        return self._norms[path]

    def fingerprint(self) -> dict:
        """What the validation outcome depends on, for the catalog's re-scan decision."""
        return {
            "name": self.name,
            "aliases": sorted(self.aliases),
            "shapes": sorted(self.shapes.items()),
            "weights": bool(self.weights),
        }


def load_base_spec(model_dir: str | Path, base_name: str | None = None, aliases: tuple[str, ...] = (),
                   flag: str = "--base-model") -> BaseModelSpec:
    """Describe the local base model directory ``model_dir`` (which must hold ``config.json``).

    ``base_name`` says which Hub id the directory is; otherwise ``_name_or_path`` or the directory name.
    ``flag`` is the option that named the directory, for the error message.
    """
    model_dir = Path(model_dir)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise UserError(f"{flag} {model_dir}: expected a local model directory with config.json")
    config = read_json(config_file)
    if not isinstance(config, dict):
        raise UserError(f"{config_file}: expected a JSON object")
    config = config.get("text_config", config) if "hidden_size" not in config else config
    layers = config.get("num_hidden_layers")
    if not isinstance(layers, int) or layers <= 0:
        raise UserError(f"{config_file}: missing or bad field num_hidden_layers")
    name_or_path = config.get("_name_or_path")
    name = base_name or (name_or_path if isinstance(name_or_path, str) and name_or_path else model_dir.name)
    # The directory name is always an alias: adapters trained on this local copy name its path.
    all_aliases = tuple(dict.fromkeys((*aliases, model_dir.resolve().name)))
    shapes = module_paths(layers, projection_shapes(config, str(config_file)))
    return BaseModelSpec(name, shapes, all_aliases, layers, checkpoint_files(model_dir))
