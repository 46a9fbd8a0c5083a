"""Arrow rows in an experiment: routed through PEFT, scored by our path, in Table 2 next to the merges."""

from __future__ import annotations

from pathlib import Path

import pytest
from experiment_configs import write_config

from lora_recycle.experiments import ResultsStore, load_config, resolve_experiment, run_experiment
from lora_recycle.experiments.report import table2
from lora_recycle.experiments.runner import artifacts_dir


def test_arrow_with_and_without_target_in_an_experiment(tmp_path, world, tiny_model):
    from lora_recycle.routing.arrow import routed
    from lora_recycle.tasks import load_task
    from lora_recycle.tasks.scoring import evaluate_task

    path = write_config(tmp_path / "arrow.yaml", world, methods=["average", {"preset": "arrow", "top_k": 2}],
                        baselines=False, include_target_lora="both")
    resolved = resolve_experiment(load_config(path), str(path))
    summary = run_experiment(resolved, tmp_path / "arrow.db", log=lambda line: None)
    assert summary.failed == 0 and summary.finished == 4
    with ResultsStore(tmp_path / "arrow.db") as store:
        rows = [r for r in store.rows() if r["method"] == "arrow"]
    by_target = {r["with_target"]: r for r in rows}
    assert set(by_target) == {False, True}
    plain, with_target = by_target[False], by_target[True]
    assert with_target["selected"][0] == "target-lora"  # the target is one of the experts, first
    assert plain["coefficients"] is None and plain["metrics"]["routing"]["rank"] >= 1
    assert plain["spec"]["settings"]["top_k"] == 2
    # the recorded accuracy is our scoring of exactly what the run wrote for PEFT
    model, tokenizer = tiny_model
    task = load_task(world["tasks"]["colour"])
    library = artifacts_dir(tmp_path / "arrow.db") / "arrow" / plain["run_hash"]
    with routed(model, library) as scored:
        again = evaluate_task(scored, tokenizer, task, "test", limit=4)
    assert again.accuracy == plain["accuracy"] and again.correct_marks() == plain["correct"]
    names = [entry["name"] for entry in table2(rows)]
    assert names == ["arrow"]


def test_arrow_settings_keep_other_methods_run_hashes(world, tmp_path):
    """Routing-only settings stay out of other methods' settings, so their run hashes did not move."""
    from lora_recycle.recipe.presets import preset

    assert "top_k" not in preset("ours").to_dict() and "top_k" not in preset("arrow").to_dict()
    assert preset("arrow").with_overrides(top_k=2).to_dict()["top_k"] == 2
    path = write_config(tmp_path / "bad.yaml", world, methods=[{"preset": "ours", "top_k": 2}])
    from lora_recycle.errors import UserError

    with pytest.raises(UserError, match="top_k"):
        load_config(Path(path))
