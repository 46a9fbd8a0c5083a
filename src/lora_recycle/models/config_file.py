"""What a model directory's ``config.json`` says, read without torch: checked before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

# the names a config may give the storage dtype, by the name lora-recycle uses for it
_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
                "float16": "float16", "fp16": "float16"}


def config_dtype(model_dir: str | Path) -> str | None:
    """The storage dtype a model directory's ``config.json`` records (``dtype``, or the older ``torch_dtype``),
    as ``float32`` / ``bfloat16`` / ``float16``; None when absent or another type."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = config.get("dtype") or config.get("torch_dtype") if isinstance(config, dict) else None
    return _DTYPE_NAMES.get(str(name).removeprefix("torch.")) if name else None
