"""``audit``: the runner's runs on one task, and a verdict with seeded bootstrap intervals."""

from __future__ import annotations

import json

import pytest

from lora_recycle.cli import main
from lora_recycle.experiments.audit import verdict
from lora_recycle.experiments.bootstrap import bootstrap_difference


def test_bootstrap_is_seeded_and_paired():
    a = {0: "1101101011", 1: "1111011010"}
    b = {0: "0101100011", 1: "1011011000"}
    first = bootstrap_difference(a, b, resamples=500, seed=3)
    assert first == bootstrap_difference(a, b, resamples=500, seed=3)
    assert first.estimate == pytest.approx(0.2) and first.low <= first.estimate <= first.high
    same = bootstrap_difference(a, a, resamples=200)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)  # paired: identical conditions never differ
    alone = bootstrap_difference(a, resamples=200)
    assert alone.estimate == pytest.approx(14 / 20) and 0 <= alone.low <= alone.high <= 1


def test_verdict_words():
    ones, zeros, half = {0: "1" * 20, 1: "1" * 20}, {0: "0" * 20, 1: "0" * 20}, {0: "10" * 10, 1: "01" * 10}
    transfer = verdict({"prompting": zeros, "target_lora": half, "ours": half, "ours+target": ones,
                        "random_init+target": half}, resamples=300)
    assert (transfer["beats_own_lora"], transfer["mechanism"]) == ("yes", "transfer")
    regularisation = verdict({"prompting": zeros, "target_lora": half, "ours": half, "ours+target": ones,
                              "random_init+target": ones}, resamples=300)
    assert (regularisation["beats_own_lora"], regularisation["mechanism"]) == ("yes", "regularisation")
    worse = verdict({"prompting": zeros, "target_lora": ones, "ours": half, "ours+target": zeros,
                     "random_init+target": zeros}, resamples=300)
    assert worse["beats_own_lora"] == "no"


def test_audit_cli(capsys, tmp_path, world):
    capsys.readouterr()
    args = ["audit", "--model", world["model"], "--db", world["db"], "--task", world["tasks"]["colour"],
            "--seeds", "2", "--k", "2", "--steps", "2", "--target-lora-steps", "2", "--test-limit", "4",
            "--threads", "1", "--results", str(tmp_path / "audit.db"), "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["accuracy"]) == {"prompting", "target_lora", "ours", "ours+target", "random_init+target"}
    assert all(a["seeds"] == 2 and a["examples"] == 4 for a in result["accuracy"].values())
    assert result["beats_own_lora"] in ("yes", "no", "unclear") and result["verdict"]
    assert result["metric"] == "choice log-likelihood accuracy"
    assert "(metric: choice log-likelihood" in result["verdict"]
    assert "the top 1 selected" in result["verdict"]  # k = 2 with the target LoRA: it and the top k-1
    assert main(args) == 0  # resumed from the results file: nothing reruns, same verdict
    assert json.loads(capsys.readouterr().out) == result
    assert main([*args[:-1]]) == 0
    assert "CI [" in capsys.readouterr().out
    assert main(["audit", "--model", world["model"], "--db", world["db"], "--task", world["tasks"]["colour"],
                 "--k", "9", "--results", str(tmp_path / "a2.db")]) == 2
    assert "--k 9 is larger than the pool" in capsys.readouterr().err


def test_audit_keeps_the_papers_budgets_by_default(world):
    """Unless asked otherwise (the CLI's defaults and audit_config's), every merge tunes for the paper's 100 steps at
    lr 5e-2 and the target-task LoRA trains for its 400 steps (rank 64, lr 3e-4)."""
    import inspect
    from pathlib import Path

    from lora_recycle.cli.experiments import audit
    from lora_recycle.experiments.audit import audit_config
    from lora_recycle.experiments.config import resolve_experiment
    from lora_recycle.experiments.grid import expand_runs

    defaults = {name: p.default for name, p in inspect.signature(audit).parameters.items()}
    paths = Path(world["model"]), Path(world["db"]), Path(world["tasks"]["colour"])
    for config in (audit_config(*paths, k=2),
                   audit_config(*paths, k=2, steps=defaults["steps"], target_lora_steps=defaults["target_lora_steps"])):
        specs = expand_runs(resolve_experiment(config, "audit"))
        merges = [s for s in specs if s.kind == "merge"]
        assert len(merges) == 3 * 3  # ours, ours + target LoRA, random-init + target LoRA on 3 seeds
        assert {(s.settings.steps, s.settings.lr) for s in merges} == {(100, 0.05)}
        trained = {(s.target_lora.steps, s.target_lora.rank, s.target_lora.lr) for s in specs if s.target_lora}
        assert trained == {(400, 64, 3e-4)}
