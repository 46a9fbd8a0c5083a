"""The runner: a smoke grid end to end, restart skips finished runs, shared work is cached once."""

from __future__ import annotations

import json
import sqlite3

from lora_recycle.experiments import ResultsStore, load_config, resolve_experiment, run_experiment
from lora_recycle.recipe import TARGET_ADAPTER_ID


def test_smoke_grid_end_to_end(smoke_results):
    runs, summary = smoke_results["runs"], smoke_results["summary"]
    assert summary.failed == 0 and summary.finished == len(runs) == summary.total
    with ResultsStore(smoke_results["results"]) as store:
        rows = store.rows()
    assert len(rows) == len(runs) == len({r["run_hash"] for r in rows})
    assert {r["run_hash"] for r in rows} == {r.run_hash for r in runs}
    cells = {(r["kind"], r["method"], r["with_target"], r["pool"], r["random_init"], r["exclude_top"]) for r in rows}
    assert cells == {
        ("prompting", "prompting", False, "none", False, 0), ("target_lora", "target_lora", False, "none", False, 0),
        ("merge", "ours", False, "recycled", False, 0), ("merge", "ours", True, "recycled", False, 0),
        ("merge", "average", False, "recycled", False, 0), ("merge", "average", True, "recycled", False, 0),
        ("merge", "ours", True, "recycled", True, 0),  # random-init control
        ("merge", "ours", True, "in_house", False, 0), ("merge", "ours", True, "in_house", False, 1),
    }
    for row in rows:
        assert len(row["correct"]) == row["n_test"] == 4
        assert abs(row["accuracy"] - row["correct"].count("1") / row["n_test"]) < 1e-12
        assert row["versions"]["torch"] and row["timings"]["total"] > 0 and row["config_hash"]
        if row["kind"] == "merge" and row["with_target"]:  # the paper's convention: the target LoRA first
            assert row["selected"][0] == "target-lora" and "target-lora" not in row["selected"][1:]
        assert row["metrics"]["metric"] == "loglik"
    ours = [r for r in rows if r["method"] == "ours" and r["pool"] == "recycled"]
    for row in ours:
        assert len(row["selected"]) == 2  # k = 2 adapters in total, with or without the target LoRA
        assert all(set(group) == set(row["selected"]) for group in row["coefficients"].values())
        assert "best_validation_loss" in row["metrics"] and row["metrics"]["best_step"] >= 1
    assert all(r["selected"][1].startswith("random-init:") for r in ours if r["random_init"])
    without = {(r["task"], r["seed"]): r["selected"] for r in ours if not r["with_target"] and not r["random_init"]}
    for r in ours:
        if r["with_target"] and not r["random_init"]:  # the top k-1 of the same ranking follow the target LoRA
            assert r["selected"][1:] == without[(r["task"], r["seed"])][:1]
    # average merges the whole pool (4 adapters), plus the target-task LoRA when included
    assert all(len(r["selected"]) == 4 + r["with_target"] for r in rows if r["method"] == "average")
    in_house = {(r["task"], r["seed"], r["exclude_top"]): r["selected"] for r in rows if r["pool"] == "in_house"}
    for (task, seed, m), selected in in_house.items():
        assert len(selected) == 2 and selected[0] == "target-lora" and selected[1].startswith("in-house:")
        assert task not in selected[1]
        if m == 1:
            assert selected[1] != in_house[(task, seed, 0)][1]  # the best in-house LoRA was left out
    artifacts = smoke_results["results"].parent / "results-artifacts" / "target-lora"
    assert len([p for p in artifacts.iterdir() if not p.name.startswith(".")]) == 3 * 2  # tasks x seeds, once each


def test_restart_skips_finished_runs(smoke_results):
    path = smoke_results["config"]
    resolved = resolve_experiment(load_config(path), str(path))
    again = run_experiment(resolved, smoke_results["results"], log=lambda line: None)
    assert again.already_done == again.total == len(smoke_results["runs"]) and again.finished == 0
    conn = sqlite3.connect(smoke_results["results"])
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()[0] == "1"
    conn.close()


def test_run_hashes_are_stable_and_local_to_the_run(tmp_path, world):
    from experiment_configs import write_config

    from lora_recycle.experiments import expand_runs

    small = write_config(tmp_path / "a.yaml", world)
    large = write_config(tmp_path / "b.yaml", world, methods=["ours", "average"], seeds=[0, 3])
    a = {r.run_hash for r in expand_runs(resolve_experiment(load_config(small)))}
    b = {r.run_hash for r in expand_runs(resolve_experiment(load_config(large)))}
    assert a < b  # growing the grid keeps every finished run valid
    steps = write_config(tmp_path / "c.yaml", world, budget={"merge_steps": 9, "target_lora_steps": 2,
                                                             "target_lora_rank": 4, "test_limit": 4})
    c = {r.run_hash for r in expand_runs(resolve_experiment(load_config(steps)))}
    assert len(a & c) == 2  # only the baselines survive a change of the merge budget


def test_similarity_selection_uses_the_target_lora(tmp_path, world):
    """pi-Tuning's quasi-FIM selection compares the pool with the task's own target-task LoRA."""
    from experiment_configs import write_config

    path = write_config(tmp_path / "pi.yaml", world, methods=[{"preset": "pi_tuning", "k": [2]}],
                        include_target_lora=False)
    results = tmp_path / "pi.db"
    run_experiment(resolve_experiment(load_config(path), str(path)), results, log=lambda line: None)
    with sqlite3.connect(results) as db:
        rows = db.execute("SELECT selected, scores FROM runs WHERE kind = 'merge'").fetchall()
        failures = db.execute("SELECT * FROM failures").fetchall()
    assert not failures
    assert len(rows) == 1
    selected, scores = (json.loads(x) for x in rows[0])
    assert len(scores) == 2 and "fresh-lora" not in scores
    assert all(-1.0 <= v <= 1.0 for v in scores.values())


def test_pi_tuning_adds_its_fresh_lora_only_without_the_target_lora(tmp_path, world):
    """The runner passes the pool's target-task LoRA to the merge: with it, k tuned adapters and no fresh LoRA."""
    from experiment_configs import write_config

    path = write_config(tmp_path / "pi.yaml", world, methods=[{"preset": "pi_tuning", "k": [2], "steps": 2}],
                        include_target_lora="both")
    results = tmp_path / "pi.db"
    run_experiment(resolve_experiment(load_config(path), str(path)), results, log=lambda line: None)
    with sqlite3.connect(results) as db:
        rows = db.execute("SELECT with_target, coefficients FROM runs WHERE kind = 'merge'").fetchall()
        assert not db.execute("SELECT * FROM failures").fetchall()
    tuned = {bool(flag): list(next(iter(json.loads(coefficients).values()))) for flag, coefficients in rows}
    assert len(tuned[True]) == 2 and TARGET_ADAPTER_ID in tuned[True] and "fresh-lora" not in tuned[True]
    assert len(tuned[False]) == 3 and "fresh-lora" in tuned[False]
