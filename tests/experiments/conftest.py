"""A tiny experiment world: the session's tiny Llama, a scanned pool of four adapters, three small tasks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from experiment_configs import SMOKE_GRID, write_config

from lora_recycle.tasks.format import Example, TaskSpec, write_task

COLOURS = {"apple": "red", "banana": "yellow", "grass": "green", "cherry": "red", "lemon": "yellow", "leaf": "green",
           "tomato": "red", "corn": "yellow", "frog": "green", "ruby": "red", "sun": "yellow", "lime": "green"}


def _rows(order: list[int], choices: bool) -> list[Example]:
    names = sorted(COLOURS)
    options = ("green", "red", "yellow") if choices else None
    return [Example(names[i % len(names)], COLOURS[names[i % len(names)]], options, str(n))
            for n, i in enumerate(order)]


def _small_task(root: Path, name: str, kind: str, template: str, stride: int) -> Path:
    """10 training rows (8 train, 2 validation) and 4 test rows: every run stays around a second."""
    order = [(stride * i + 1) % 12 for i in range(14)]
    spec = TaskSpec(name=name, type=kind, template=template, max_new_tokens=2)
    choices = kind == "multiple_choice"
    return write_task(root / name, spec, _rows(order[:10], choices), _rows(order[10:], choices))


@pytest.fixture(scope="session")
def world(tmp_path_factory, tiny_model_dir, adapter_dirs) -> dict:
    """Paths of a complete tiny world: model, pool catalog (4 accepted adapters) and three small tasks."""
    from lora_recycle.cli import main

    root = tmp_path_factory.mktemp("world")
    for name, path in adapter_dirs.items():
        shutil.copytree(path, root / "pool" / name)
    db = root / "pool.db"
    assert main(["pool", "scan", str(root / "pool"), "--base-model", str(tiny_model_dir), "--db", str(db),
                 "--no-require-license"]) == 0
    tasks = {"colour": _small_task(root / "tasks", "colour", "multiple_choice", "What colour is {input}?", 5),
             "shade": _small_task(root / "tasks", "shade", "multiple_choice", "Which shade is {input}?", 7),
             "echo": _small_task(root / "tasks", "echo", "generation", "Colour of {input}:", 1)}
    return {"model": str(tiny_model_dir), "db": str(db), "tasks": {k: str(v) for k, v in tasks.items()}}


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory, world) -> dict:
    """The smoke grid over the tiny world, run once locally: ``{"config", "results", "summary", "runs"}``."""
    from lora_recycle.experiments import expand_runs, load_config, resolve_experiment, run_experiment

    root = tmp_path_factory.mktemp("smoke")
    path = write_config(root / "smoke.yaml", world, **SMOKE_GRID)
    resolved = resolve_experiment(load_config(path), str(path))
    results = root / "results.db"
    summary = run_experiment(resolved, results, log=lambda line: None)
    return {"config": path, "results": results, "summary": summary, "runs": expand_runs(resolved)}
