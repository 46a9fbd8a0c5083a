"""The Hugging Face Hub id of a local base-model directory, so exported adapters link to their base on the Hub.

Adapters name their base in ``adapter_config.json`` (``base_model_name_or_path``) and in the card
(``base_model``); the Hub lists an adapter under its base only when that is a Hub id, not this machine's path.
Sources, in order: an explicit id, the directory's own record (models lora-recycle converted), a Hugging Face
cache path (``models--org--name/snapshots/<revision>``), ``config.json``'s ``_name_or_path`` when it is a Hub
id, and only as a last resort the local path (with a warning).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lora_recycle.errors import UserError

MODEL_RECORD_NAME = "lora_recycle_source.json"  # written by our model conversions; holds ``hub_id``
MODEL_RECORD_FORMAT_VERSION = 1
IdSource = Literal["option", "record", "hf_cache", "config", "path"]

# huggingface_hub's rule: "name" or "namespace/name"; alphanumerics, "-", "_", "."; no leading/trailing "-"/".";
# no "--" or ".."; at most 96 characters; not ending in ".git".
_PART = r"\w(?:[\w.-]*\w)?"
_REPO_ID = re.compile(rf"(?:{_PART}/)?{_PART}")


def is_hub_id(text: str, require_namespace: bool = True) -> bool:
    """True when ``text`` is a valid Hub model id (``org/name``; a bare ``name`` too unless a namespace is required).

    >>> is_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct"), is_hub_id("/models/x"), is_hub_id("gpt2")
    (True, False, False)
    """
    if not isinstance(text, str) or not 0 < len(text) <= 96 or "--" in text or ".." in text or text.endswith(".git"):
        return False
    if require_namespace and "/" not in text:
        return False
    return _REPO_ID.fullmatch(text) is not None


def hub_id_from_cache_path(path: Path) -> str | None:
    """``org/name`` from a Hugging Face cache path ``.../models--org--name/snapshots/<revision>[/...]``, else None."""
    parts = Path(path).parts
    for i, part in enumerate(parts[:-1]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            repo_id = "/".join(part[len("models--"):].split("--"))
            if is_hub_id(repo_id, require_namespace=False):
                return repo_id
    return None


@dataclass(frozen=True)
class BaseModelId:
    """The name an export records for its base model, and where it came from."""

    name: str
    source: IdSource

    @property
    def is_hub_id(self) -> bool:
        return self.source != "path"

    def warning(self) -> str | None:
        """The line to show when only the local path was found (the Hub cannot link such an adapter)."""
        if self.is_hub_id:
            return None
        return (f"warning: could not tell the Hub id of the base model at {self.name}; the export names the local "
                "path. Pass --base-model-id ORG/NAME to make it publishable.")


def _record_id(model_dir: Path) -> str | None:
    try:
        record = json.loads((model_dir / MODEL_RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    hub_id = record.get("hub_id") if isinstance(record, dict) else None
    return hub_id if isinstance(hub_id, str) and is_hub_id(hub_id, require_namespace=False) else None


def _config_id(model_dir: Path) -> str | None:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = config.get("_name_or_path") if isinstance(config, dict) else None
    # a bare name or anything that exists here is (most likely) a local path, not a Hub id
    if isinstance(name, str) and is_hub_id(name) and not Path(name).exists():
        return name
    return None


def resolve_base_model_id(model_dir: str | Path, explicit: str | None = None) -> BaseModelId:
    """The Hub id of the base model in ``model_dir`` (see the module docstring for the order), else its path.

    An ``explicit`` id that is not a valid Hub id is a UserError naming ``--base-model-id``.
    """
    model_dir = Path(model_dir)
    if explicit is not None:
        if not is_hub_id(explicit, require_namespace=False):
            raise UserError(f"--base-model-id {explicit!r}: not a Hub model id (expected ORG/NAME)")
        return BaseModelId(explicit, "option")
    if (hub_id := _record_id(model_dir)) is not None:
        return BaseModelId(hub_id, "record")
    for candidate in (model_dir, model_dir.resolve()):
        if (hub_id := hub_id_from_cache_path(candidate)) is not None:
            return BaseModelId(hub_id, "hf_cache")
    if (hub_id := _config_id(model_dir)) is not None:
        return BaseModelId(hub_id, "config")
    return BaseModelId(str(model_dir.resolve()), "path")
