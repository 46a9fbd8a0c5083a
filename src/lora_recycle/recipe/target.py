"""Train a target-task LoRA once and reuse it: one cache layout for the CLI, the runner, the demo and the hub.

A LoRA is trained into a private temporary folder and renamed into place only when complete, so a
killed run never leaves a half-written adapter where a later run would pick it up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lora_recycle.tasks.format import Task
from lora_recycle.tuning.target_config import TargetLoraConfig

if TYPE_CHECKING:
    import torch

RECORD_NAME = "training.json"
_PATH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def path_name_problem(name: str) -> str | None:
    """Why ``name`` (a task name) cannot be used as one file or folder name, or None.

    It becomes part of cache paths (``target-lora/<task>-seed0-...``): a ``/`` or ``..`` would write outside
    them, so only letters, digits and ``. _ + -`` are taken, not first a dot, at most 128 characters.
    """
    if _PATH_NAME.fullmatch(name):
        return None
    return (f"{name!r} is not a plain name (letters, digits, '.', '_', '+', '-'; starting with a letter or digit; "
            "at most 128 characters)")


def short_hash(data: Any) -> str:
    """12 hex digits of the canonical JSON of ``data``."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def target_lora_dir(root: str | Path, task_name: str, task: Task, config: TargetLoraConfig, model_ref: str,
                    dtype: str = "float32") -> Path:
    """``root/target-lora/<task>-seed<seed>-<hash of task, model, dtype and config>``."""
    from lora_recycle.errors import UserError

    if (problem := path_name_problem(task_name)) is not None:
        raise UserError(f"task name {problem}")
    key = short_hash({"task": task_name, "task_hash": task.content_hash(), "model": model_ref, "dtype": dtype,
                      "config": config.identity()})
    return Path(root) / "target-lora" / f"{task_name}-seed{config.seed}-{key}"


def cached_target_lora(model, tokenizer, task: Task, config: TargetLoraConfig, final: Path,
                       device: torch.device | str = "cpu", base_model_id: str | None = None
                       ) -> tuple[Path, dict[str, Any]]:
    """The LoRA at ``final`` if complete, else trained there; returns ``(folder, training record)``."""
    from lora_recycle.tuning.target_lora import train_target_lora

    final = Path(final)
    if (final / "adapter_config.json").is_file():
        record_file = final / RECORD_NAME
        return final, json.loads(record_file.read_text()) if record_file.is_file() else {}
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    _, loop, rank = train_target_lora(model, tokenizer, task, config, scratch, device, base_model_id=base_model_id)
    record = {"rank": rank, "best_step": loop.best_step, "best_validation_loss": loop.best_val_loss,
              "initial_validation_loss": loop.initial_val_loss, "train_seconds": time.perf_counter() - started,
              "config": config.identity()}
    (scratch / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    try:
        os.rename(scratch, final)
    except OSError:  # another worker finished the same LoRA first: keep theirs
        shutil.rmtree(scratch, ignore_errors=True)
        record_file = final / RECORD_NAME
        record = json.loads(record_file.read_text()) if record_file.is_file() else record
    return final, record


def kept_untrained_start(record: dict[str, Any]) -> bool:
    """True when a training record's LoRA kept its B = 0 start (best step 0): it is the base model."""
    return record.get("best_step") == 0


def clean_stale(root: str | Path) -> None:
    """Remove temporary folders left by killed trainings under ``root/target-lora``."""
    folder = Path(root) / "target-lora"
    if folder.is_dir():
        for stale in folder.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
