"""A base model's linear layers without loading its weights: modules from its config (meta device), ||W||_F read
one tensor at a time, a block at a time, from its safetensors files (each header parsed once). A fixed-coefficient
merge needs no more (``require_fits``), so TIES over an 8B model's LoRAs does not load 16 GB."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lora_recycle.outputs import incomplete_reason
from lora_recycle.pool.header import NUMPY_FLOATS, TensorInfo, checkpoint_files, read_safetensors_header, stored_norm


@dataclass
class BaseSkeleton:
    """``model`` on the meta device (shapes, no data) and where each linear weight lies in the checkpoint."""

    model: nn.Module
    weights: dict[str, tuple[Path, str]]  # module path -> (safetensors file, tensor name)
    headers: dict[Path, dict[str, TensorInfo]] = field(default_factory=dict)  # each file's parsed header
    _norms: dict[str, float] = field(default_factory=dict)

    def weight_norm(self, path: str) -> float:
        """``||W||_F`` (float64) of the linear layer at ``path``, read from disk once, a block at a time."""
        if path not in self._norms:
            file, name = self.weights[path]
            norm = stored_norm(file, name, self.headers)
            assert norm is not None, f"{name}: open_skeleton admits float weights only"
            self._norms[path] = norm
        return self._norms[path]


def open_skeleton(model_dir: str | Path) -> BaseSkeleton | None:
    """The skeleton of a plain (unquantised) safetensors model directory, or None where the full model must load
    instead: no safetensors, a quantisation config, a config transformers cannot build, or any linear weight whose
    tensor is not found under its own (or a tied) name with the module's shape. None never hides a user error:
    the full load that follows reports it as before."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file() or incomplete_reason(model_dir) is not None:
        return None
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict) or config.get("quantization_config") is not None:
            return None
        # each file's header (one our parser refuses: the full load then reports it)
        headers = {file: read_safetensors_header(file) for file in set(checkpoint_files(model_dir).values())}
        stored = {name: (file, info) for file, header in headers.items() for name, info in header.items()}
        if not stored:
            return None
        from transformers import AutoConfig, AutoModelForCausalLM

        from lora_recycle.models.loading import quiet_libraries

        quiet_libraries()
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model_dir),
                                                                                trust_remote_code=False),
                                                     trust_remote_code=False)
        names: dict[int, list[str]] = {}
        for name, parameter in model.named_parameters(remove_duplicate=False):
            names.setdefault(id(parameter), []).append(name)
        weights = {}
        for path, module in model.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            name = next((n for n in names.get(id(module.weight), []) if n in stored), None)
            if name is None or stored[name][1].shape != tuple(module.weight.shape):
                return None
            if stored[name][1].dtype not in NUMPY_FLOATS:  # e.g. fp8 weights: the loaded model reads those
                return None
            weights[path] = (stored[name][0], name)
    except Exception:  # noqa: BLE001 - anything odd: load the model as before, which names the problem
        return None
    return BaseSkeleton(model, weights, headers)
