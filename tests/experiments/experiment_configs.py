"""Experiment configs for the tests (a module of its own: ``conftest`` names collide across folders)."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_config(path: Path, world: dict, **fields) -> Path:
    """An experiment YAML over ``world``; ``fields`` replace or add top-level keys."""
    data = {"name": "test", "model": world["model"], "db": world["db"], "tasks": world["tasks"],
            "target_tasks": ["colour"], "methods": ["ours"], "k": [2], "seeds": [0],
            "include_target_lora": "both", "threads": 1,
            "budget": {"merge_steps": 2, "target_lora_steps": 2, "target_lora_rank": 4, "test_limit": 4}}
    data.update(fields)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


SMOKE_GRID = {
    "target_tasks": ["colour", "shade"], "seeds": [0, 1], "methods": ["ours", "average"], "k": [2],
    "controls": {"random_init": {"k": [2]},
                 "in_house": {"tasks": ["colour", "shade", "echo"], "k": [2], "exclude_top": [1], "exclude_k": 2}},
}
