"""Which merge strategy a device runs fastest for a model's shapes: timed once, kept in a JSON cache.

On a GPU the FLOP model behind ``auto`` misjudges (per-kernel overhead, not FLOPs, decides at small ranks), so
there ``auto`` times the candidates on the first real step and reuses the winner for every later merge of the
same shapes on the same device. On a CPU ``auto`` stays the deterministic FLOP model (same seed, same numbers);
``calibrate`` times there too. The key names the device, the compute dtype, the torch version, the token count
(rounded up to a power of two) and every merged layer's ``(in, out, summed rank)``; the file lives in the cache
root (``$LORA_RECYCLE_CACHE``, default ``~/.cache/lora-recycle``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import get_args

import torch

from lora_recycle.merging.options import Strategy
from lora_recycle.models.precision import cpu_kind
from lora_recycle.outputs import write_text_atomically

CACHE_NAME = "strategy-timings.json"
TIMED = tuple(s for s in get_args(Strategy) if s != "calibrate")  # what a timing can settle on


def cache_file() -> Path:
    """The JSON file of timed strategy choices in the cache root."""
    from lora_recycle.minihub.base_model import default_cache_dir

    return default_cache_dir() / CACHE_NAME


def times_auto(device: torch.device | str) -> bool:
    """True where ``auto`` is decided by timing (accelerators), False where by the FLOP model (CPU)."""
    return torch.device(device).type != "cpu"


def device_name(device: torch.device | str) -> str:
    """The device as a cache key: the GPU's product name, or the CPU's kind."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type}:{cpu_kind()}"


def shape_key(device: torch.device | str, dtype: torch.dtype, tokens: int, layers: list[tuple[int, int, int]],
              trainable_factors: bool) -> str:
    """A stable key for one step's shapes: same device, dtype, token bucket and layer shapes give the same key."""
    bucket = 1 << max(0, int(tokens) - 1).bit_length()
    payload = {"device": device_name(device), "dtype": str(dtype), "torch": torch.__version__, "tokens": bucket,
               "joint": trainable_factors, "layers": sorted(Counter(layers).items())}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def read_choice(key: str, path: Path | None = None) -> tuple[str, dict[str, float]] | None:
    """``(strategy, seconds per candidate)`` timed earlier for ``key``, or None (an unreadable file or an unknown
    strategy is no cache)."""
    try:
        entry = json.loads((path or cache_file()).read_text(encoding="utf-8")).get(key)
        if entry["strategy"] not in TIMED:
            return None
        return str(entry["strategy"]), {str(k): float(v) for k, v in entry["seconds"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def write_choice(key: str, strategy: str, seconds: dict[str, float], path: Path | None = None) -> None:
    """Record a timed choice (atomically; a cache that cannot be written only costs a timing next time)."""
    path = path or cache_file()
    try:
        entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    entries[key] = {"strategy": strategy, "seconds": seconds}
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs a timing next time
        write_text_atomically(path, json.dumps(entries, indent=1, sort_keys=True))
