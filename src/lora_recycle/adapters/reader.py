"""Read any supported adapter directory (PEFT or mlx-lm) into the canonical form."""

from __future__ import annotations

from pathlib import Path

from lora_recycle.adapters.formats import is_mlx_adapter
from lora_recycle.adapters.lora import LoraAdapter
from lora_recycle.adapters.mlx_io import read_mlx_adapter
from lora_recycle.adapters.peft_io import read_peft_adapter


def read_adapter(
    directory: str | Path,
    allow_pickle: bool = False,
    adapter_id: str | None = None,
    expected_sha256: str | None = None,
) -> LoraAdapter:
    """Read a PEFT or mlx-lm LoRA adapter directory, whichever it is; raises UserError naming the problem.

    ``expected_sha256`` refuses a weights file whose content differs from what was validated.
    """
    if is_mlx_adapter(directory):
        return read_mlx_adapter(directory, adapter_id=adapter_id, expected_sha256=expected_sha256)
    return read_peft_adapter(directory, allow_pickle=allow_pickle, adapter_id=adapter_id,
                             expected_sha256=expected_sha256)
