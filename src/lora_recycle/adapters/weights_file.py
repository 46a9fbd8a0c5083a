"""Load an adapter's weights file, optionally checked against the sha256 recorded when it was validated."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file

from lora_recycle.errors import UserError


def load_safetensors(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; with ``expected_sha256``, parsed from the very bytes that were hashed."""
    try:
        if expected_sha256 is None:
            return load_file(path)
        return load_safetensors_bytes(verified_bytes(path, expected_sha256))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable safetensors file ({exc})") from None


def load_pickle_weights(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a pickle weights file, loaded weights-only (never arbitrary objects)."""
    source = path if expected_sha256 is None else io.BytesIO(verified_bytes(path, expected_sha256))
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise UserError(f"{path}: unreadable weights ({type(exc).__name__})") from None


def verified_bytes(path: Path, expected_sha256: str) -> bytes:
    """The file's bytes, refused with a one-line error if their sha256 is not the expected one."""
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise UserError(f"{path}: content changed since the pool scan (sha256 differs); re-run pool scan")
    return data
