"""A method at several learning rates (``lr: [1.0e-4, 5.0e-5]``): one run each, reported as one row, their mean."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_recycle.errors import UserError
from lora_recycle.experiments.config import ResolvedExperiment, parse_config
from lora_recycle.experiments.findings import paired
from lora_recycle.experiments.grid import expand_runs
from lora_recycle.experiments.lr_variants import average_lr_variants
from lora_recycle.experiments.report import build_tables, render_markdown

LRS = [1e-4, 5e-5]


def _expand(methods: list) -> list:
    config = parse_config({"model": "m", "db": "pool.db", "tasks": {"a": "a", "b": "b"}, "k": [3], "seeds": [0],
                           "include_target_lora": "both", "methods": methods}, "x.yaml")
    resolved = ResolvedExperiment(config, "x.yaml", Path("m"), None, Path("pool.db"), config.tasks, ["a", "b"], 8,
                                  [], "model", "pool")
    return [r for r in expand_runs(resolved, task_hashes={"a": "0", "b": "0"}) if r.kind == "merge"]


def test_a_list_of_learning_rates_runs_each_and_one_lr_keeps_todays_runs():
    both = _expand([{"preset": "pi_tuning", "lr": LRS}])
    assert len(both) == 2 * 2 * 2  # tasks x with/without target LoRA x lrs
    assert sorted({r.settings.lr for r in both}) == sorted(LRS) and len({r.run_hash for r in both}) == 8
    assert {r.cell for r in both} == {"pi_tuning k=3 lr=0.0001", "pi_tuning k=3 lr=5e-05",
                                      "pi_tuning k=3 lr=0.0001 +target", "pi_tuning k=3 lr=5e-05 +target"}
    assert all(r.to_dict()["lr_variants"] == tuple(LRS) for r in both)
    # each variant is the very run (hash) that a plain `lr: a` entry makes: its siblings are not part of it
    single = {r.run_hash for lr in LRS for r in _expand([{"preset": "pi_tuning", "lr": lr}])}
    assert single == {r.run_hash for r in both}
    plain = _expand([{"preset": "pi_tuning", "lr": 1e-4}])
    assert [r.run_hash for r in _expand([{"preset": "pi_tuning", "lr": [1e-4]}])] == [r.run_hash for r in plain]
    assert all("lr_variants" not in r.to_dict() and "lr=" not in r.cell for r in plain)


@pytest.mark.parametrize("entry,needle", [({"preset": "pi_tuning", "lr": []}, "at least one"),
                                          ({"preset": "pi_tuning", "lr": [1e-4, 1e-4]}, "each once"),
                                          ({"preset": "pi_tuning", "lr": [1e-4, -1.0]}, "greater than 0"),
                                          ({"preset": "average", "lr": LRS}, "lr")])
def test_bad_learning_rate_lists_are_one_line_errors(entry, needle):
    with pytest.raises(UserError, match=needle):
        parse_config({"hub": {"profile": "tiny"}, "methods": [entry]}, "x.yaml")


def _marks(hits: int, n: int = 4) -> str:
    return "1" * hits + "0" * (n - hits)


def _merge(task: str, seed: int, lr: float, hits: int, with_target: bool = False) -> dict:
    settings = {"method": "pi_tuning", "adaptive": True, "steps": 100, "lr": lr, "seed": seed, "k": 3}
    return {"run_hash": f"{task}{seed}{lr}{with_target}", "kind": "merge", "pool": "recycled",
            "with_target": with_target, "exclude_top": 0, "random_init": False, "task": task, "seed": seed, "k": 3,
            "method": "pi_tuning", "accuracy": hits / 4, "accuracy_norm": None, "correct": _marks(hits),
            "spec": {"settings": settings, "lr_variants": LRS}, "selected": [], "scores": {}, "coefficients": None,
            "metrics": {}}


def _baseline(kind: str, task: str, seed: int, hits: int) -> dict:
    return {"run_hash": f"{kind}{task}{seed}", "kind": kind, "pool": "none", "with_target": False, "exclude_top": 0,
            "random_init": False, "task": task, "seed": seed, "k": None, "method": kind, "accuracy": hits / 4,
            "accuracy_norm": None, "correct": _marks(hits), "spec": {}, "selected": [], "scores": {},
            "coefficients": None, "metrics": {}}


def test_variants_are_one_row_their_mean_per_task_and_seed():
    # (task, seed): hits at lr 1e-4 and 5e-5, out of 4
    hits = {("a", 0): (4, 2), ("b", 0): (1, 1), ("a", 1): (3, 0), ("b", 1): (2, 4)}
    rows = [_merge(t, s, lr, h) for (t, s), pair in hits.items() for lr, h in zip(LRS, pair, strict=True)]
    rows += [_baseline("prompting", t, s, 1) for t in "ab" for s in (0, 1)]
    averaged, incomplete = average_lr_variants(rows)
    assert incomplete == [] and len(averaged) == 4 + 4
    cell = next(r for r in averaged if r["method"] == "pi_tuning" and r["task"] == "a" and r["seed"] == 0)
    assert cell["accuracy"] == pytest.approx(0.75) and cell["correct"] == [1.0, 1.0, 0.5, 0.5]
    assert cell["lr_variants"] == LRS and [r["lr"] for r in cell["lr_runs"]] == LRS
    tables = build_tables(rows)
    entry = next(e for e in tables["table2"] if e["name"] == "pi_tuning")
    assert entry["method"] == "pi_tuning (3), mean of lr 0.0001, 5e-05" and entry["lr_variants"] == LRS
    # seed 0: (0.75 + 0.25) / 2 = 0.5; seed 1: (0.375 + 0.75) / 2 = 0.5625
    assert entry["without_target"]["per_seed"] == {"0": pytest.approx(0.5), "1": pytest.approx(0.5625)}
    assert entry["without_target"]["tasks"] == 2 and tables["runs"] == len(rows)
    # Q1 pairs the averaged per-example correctness with prompting's: mean 0.53125 - 0.25
    q1 = next(f for f in tables["findings"] if f["question"] == "Q1")
    assert "pi_tuning" not in q1["comparison"]  # the findings read `ours`; pair by hand below
    merged = [r for r in averaged if r["method"] == "pi_tuning"]
    prompting = [r for r in averaged if r["kind"] == "prompting"]
    assert paired(merged, prompting, resamples=50).estimate == pytest.approx(0.53125 - 0.25)
    assert tables["per_task"]["rows"]["pi_tuning (3), mean of lr 0.0001, 5e-05"]["a"] == pytest.approx(0.5625)


def test_a_task_and_seed_missing_a_learning_rate_is_left_out_and_named():
    rows = [_merge(t, s, lr, 2 + (lr == LRS[0])) for t in "ab" for s in (0, 1) for lr in LRS
            if (t, s, lr) != ("b", 1, 5e-5)]
    rows += [_baseline("prompting", t, s, 1) for t in "ab" for s in (0, 1)]
    averaged, incomplete = average_lr_variants(rows)
    assert incomplete == [{"kind": "merge", "method": "pi_tuning", "k": 3, "with_target": False,
                           "pool": "recycled", "random_init": False, "exclude_top": 0, "task": "b", "seed": 1,
                           "recorded_lrs": [1e-4], "missing_lrs": [5e-5]}]
    assert not any(r["task"] == "b" and r["seed"] == 1 and r["kind"] == "merge" for r in averaged)
    tables = build_tables(rows)
    entry = next(e for e in tables["table2"] if e["name"] == "pi_tuning")["without_target"]
    # seed 1 lacks task b, so the row averages seed 0 alone (as for any missing run): (0.75 + 0.5) / 2
    assert entry["seeds"] == 1 and entry["mean"] == pytest.approx(0.625)
    markdown = render_markdown(tables, {}, {}, "r.db")
    assert "- pi_tuning (3), b seed 1: lr 5e-05 not recorded" in markdown
    assert "| pi_tuning (3), mean of lr 0.0001, 5e-05 |" in markdown
