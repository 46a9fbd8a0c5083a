"""Experiment configs carry the paper's settings: Table 4's p x C per method, metrics, pi-Tuning's two lrs."""

from pathlib import Path

import pytest

from lora_recycle.errors import UserError
from lora_recycle.experiments.config import load_config, parse_config
from lora_recycle.experiments.grid import method_settings

ROOT = Path(__file__).resolve().parents[2]
WORLD = {"model": "m", "db": "p.db", "tasks": {"t": "t"}}


def test_methods_take_prune_coef_max_rank_and_keep_start():
    config = parse_config({**WORLD, "methods": [
        {"preset": "ties", "name": "a", "prune": 0.2, "coef": 1.0},
        {"preset": "ties", "name": "b", "prune": 0.4, "coef": "1/k", "max_rank": 16},
        {"preset": "ours", "name": "c", "keep_start": True},
        {"preset": "pi_tuning", "name": "d", "fresh_lora": "modal", "lr": 5e-5}]}, "x.yaml")
    a, b, c, d = (method_settings(m, config) for m in config.methods)
    assert (a.prune, a.coef, a.max_rank) == (0.2, 1.0, None)
    assert (b.prune, b.coef, b.max_rank) == (0.4, None, 16)  # coef None is 1/k per adapter
    assert c.keep_start and not a.keep_start
    assert d.fresh_lora == "modal" and d.lr == 5e-5 and d.fresh_rank == 64
    with pytest.raises(UserError, match="keep_start does not apply to method ties"):
        parse_config({**WORLD, "methods": [{"preset": "ties", "keep_start": True}]}, "x.yaml")
    with pytest.raises(UserError, match=r"methods\[0\]\.coef"):
        parse_config({**WORLD, "methods": [{"preset": "ties", "coef": "half"}]}, "x.yaml")


def test_selection_metric_defaults_apply_unless_a_method_sets_its_own():
    config = parse_config({**WORLD, "metric": "exact_match", "selection_metric": "exact_match",
                           "selection_split": "labelled",
                           "methods": ["ours", {"preset": "ours", "name": "o2", "selection_split": "train"}]}, "x")
    first, second = (method_settings(m, config) for m in config.methods)
    assert (first.selection_metric, first.selection_split) == ("exact_match", "labelled")
    assert (second.selection_metric, second.selection_split) == ("exact_match", "train")
    with pytest.raises(UserError, match="field metric"):
        parse_config({**WORLD, "metric": "bleu"}, "x")


def test_paper_yaml_uses_the_papers_metric_and_both_pi_tuning_lrs():
    config = load_config(ROOT / "experiments" / "paper.yaml")
    assert (config.metric, config.selection_metric, config.selection_split) == ("exact_match", "exact_match",
                                                                               "labelled")
    (pi,) = [m for m in config.methods if m.preset == "pi_tuning"]  # one row: the mean of both lrs' runs
    assert sorted(pi.lr_variants) == [5e-5, 1e-4] and pi.k == [20]
    assert [c.noise_std for c in config.controls.random_init] == ["pooled"]
    sweep = load_config(ROOT / "experiments" / "ties_sweep.yaml")
    cells = {(method_settings(m, sweep).prune, method_settings(m, sweep).coef) for m in sweep.methods}
    assert cells == {(p, c) for p in (0.2, 0.4, 0.6) for c in (1.0, 0.3, None)}
