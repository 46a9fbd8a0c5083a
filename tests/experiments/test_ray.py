"""The Ray executor gives the same results as the local one (runs hash alike, so rows pair up)."""

from __future__ import annotations

import pytest
from experiment_configs import SMOKE_GRID, write_config

from lora_recycle.experiments import ResultsStore, load_config, resolve_experiment, run_experiment


@pytest.fixture()
def local_ray():
    ray = pytest.importorskip("ray")
    from lora_recycle.experiments.executors import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield RayExecutor()
    finally:
        ray.shutdown()


def test_ray_matches_local(tmp_path, world, smoke_results, local_ray):
    # A sub-grid of the smoke grid: its runs have the same hashes as the smoke (local) runs.
    config = write_config(tmp_path / "ray.yaml", world, **{**SMOKE_GRID, "target_tasks": ["colour"], "seeds": [1],
                                                           "methods": ["ours"], "controls": {}})
    resolved = resolve_experiment(load_config(config), str(config))
    summary = run_experiment(resolved, tmp_path / "ray.db", local_ray, log=lambda line: None)
    assert summary.failed == 0 and summary.finished == summary.total == 4
    assert local_ray.gpus_per_task() == 0
    with ResultsStore(tmp_path / "ray.db") as store:
        remote = {r["run_hash"]: r for r in store.rows()}
    with ResultsStore(smoke_results["results"]) as store:
        local = {r["run_hash"]: r for r in store.rows(remote)}
    assert set(local) == set(remote)
    for run_hash, row in remote.items():
        mine = local[run_hash]
        assert row["worker"] != mine["worker"]  # really ran elsewhere
        for key in ("accuracy", "accuracy_norm", "n_test", "correct", "selected", "scores"):
            assert row[key] == mine[key], key
        assert row["metrics"].keys() == mine["metrics"].keys()
        for key in ("best_validation_loss", "initial_validation_loss", "best_step"):
            if key in mine["metrics"]:
                assert row["metrics"][key] == pytest.approx(mine["metrics"][key], rel=1e-5), key
        if row["coefficients"]:
            for group, values in row["coefficients"].items():
                assert values == pytest.approx(mine["coefficients"][group], rel=1e-4, abs=1e-6)
