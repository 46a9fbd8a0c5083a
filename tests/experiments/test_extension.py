"""Adding a merge method and a selection strategy is one registration each; CLI and experiments pick them up."""

from __future__ import annotations

import json

import pytest
import torch
from experiment_configs import write_config

from lora_recycle.adapters import read_peft_adapter
from lora_recycle.adapters.lora import LoraModule
from lora_recycle.cli import main
from lora_recycle.experiments import ResultsStore, load_config, resolve_experiment, run_experiment
from lora_recycle.merging.module_merge import ModuleMerge
from lora_recycle.pool import Catalog, load_pool_adapters
from lora_recycle.recipe.presets import METHODS, register_method
from lora_recycle.selection.strategies import STRATEGIES, register_strategy


def _first_module(modules: list[LoraModule], weight: float) -> LoraModule:
    """Toy exact merge: keep the first present adapter's update (scale folded into B)."""
    first = modules[0]
    return LoraModule(first.A.float(), first.B.float() * first.scale, 1.0)


@pytest.fixture()
def toy_registrations():
    register_strategy("last_two", "the two alphabetically last ids", choose=lambda ids, k, seed: sorted(ids)[-k:])
    register_method("first_only", "a test toy", ("selection", "k"), merge=ModuleMerge(_first_module, factored=True),
                    adaptive=False, selection="last_two", tuning="none")
    yield
    METHODS.remove("first_only")
    STRATEGIES.remove("last_two")


def _accepted(db) -> list[str]:
    with Catalog(db, create=False) as catalog:
        return sorted(row["id"] for row in catalog.rows(status="accepted"))


def test_toy_method_and_strategy_run_through_the_cli(capsys, tmp_path, world, toy_registrations):
    capsys.readouterr()
    out = tmp_path / "toy"
    code = main(["merge", "--model", world["model"], "--db", world["db"], "--method", "first_only", "--k", "2",
                 "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    expected = _accepted(world["db"])[-2:]
    assert summary["selected"] == expected
    merged = read_peft_adapter(out)
    pool = load_pool_adapters(world["db"], expected)
    for path, module in merged.modules.items():
        first = next(a for a in pool if path in a.modules)
        torch.testing.assert_close(module.delta(), first.modules[path].delta(), atol=1e-5, rtol=1e-4)
    assert set(merged.modules) == set().union(*(a.modules for a in pool))


def test_toy_method_refuses_undeclared_settings(capsys, tmp_path, world, toy_registrations):
    capsys.readouterr()
    code = main(["merge", "--model", world["model"], "--db", world["db"], "--method", "first_only", "--prune", "0.5",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "--prune does not apply to method first_only" in err


def test_toy_method_and_strategy_run_in_an_experiment(tmp_path, world, toy_registrations):
    path = write_config(tmp_path / "toy.yaml", world, methods=["first_only", {"preset": "average", "name": "avg2",
                                                                              "selection": "last_two"}],
                        baselines=False, include_target_lora=False)
    resolved = resolve_experiment(load_config(path), str(path))
    summary = run_experiment(resolved, tmp_path / "toy.db", log=lambda line: None)
    assert summary.failed == 0 and summary.finished == 2
    with ResultsStore(tmp_path / "toy.db") as store:
        rows = {r["method"]: r for r in store.rows()}
    expected = _accepted(world["db"])[-2:]
    assert rows["first_only"]["selected"] == expected and rows["avg2"]["selected"] == expected
    assert rows["first_only"]["spec"]["settings"]["method"] == "first_only"
    assert rows["avg2"]["spec"]["settings"]["method"] == "average"  # a named entry still runs its preset
