"""``audit``: on one task, does recycling beat a LoRA of your own, and is the gain transfer or regularisation?

The audit is a small experiment (same config schema, runner and results file as any study): over
several seeds it runs prompting, the target-task LoRA, the adaptive merge (``ours``) without and with
the target-task LoRA, and the random-init control with the target-task LoRA. The verdict compares
them with paired bootstrap intervals over test examples and seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lora_recycle.errors import UserError
from lora_recycle.experiments.bootstrap import Interval, bootstrap_difference
from lora_recycle.experiments.config import ExperimentConfig, parse_config, resolve_experiment
from lora_recycle.experiments.executors import Executor
from lora_recycle.experiments.grid import RunSpec, expand_runs
from lora_recycle.experiments.results import ResultsStore
from lora_recycle.experiments.runner import run_experiment

CONDITIONS = {
    "prompting": "prompting (zero-shot base)",
    "target_lora": "target-task LoRA (your own)",
    "ours": "ours (recycled adapters)",
    "ours+target": "ours + target-task LoRA",
    "random_init+target": "random-init adapters + target-task LoRA",
}


def audit_config(model: Path, db: Path, task: Path, seeds: int = 3, k: int = 5, steps: int | None = None,
                 target_lora_steps: int = 400, test_limit: int | None = None, device: str = "cpu",
                 dtype: str = "float32", threads: int | None = None) -> ExperimentConfig:
    """The audit as an experiment configuration over one task."""
    from lora_recycle.tasks import load_task

    name = load_task(task).name
    data = {"name": f"audit-{name}", "model": str(model), "db": str(db), "tasks": {name: str(task)},
            "target_tasks": [name], "methods": ["ours"], "k": [k], "seeds": list(range(seeds)),
            "include_target_lora": "both", "controls": {"random_init": {"method": "ours", "include_target_lora": True}},
            "device": device, "dtype": dtype, "threads": threads,
            "budget": {"merge_steps": steps, "target_lora_steps": target_lora_steps, "test_limit": test_limit}}
    return parse_config(data, "audit")


def condition_of(spec: RunSpec) -> str:
    """Which audit condition a run belongs to."""
    if spec.kind != "merge":
        return spec.kind
    if spec.random_init:
        return "random_init+target"
    return "ours+target" if spec.with_target else "ours"


def run_audit(config: ExperimentConfig, results_path: Path, executor: Executor | None = None,
              log: Callable[[str], None] = print, resamples: int = 2000, bootstrap_seed: int = 0) -> dict[str, Any]:
    """Run (or resume) the audit's runs and return accuracies, paired intervals and the verdict."""
    from lora_recycle.pool.catalog import accepted_ids

    k = config.k[0]
    pool_size = len(accepted_ids(config.db))
    if k > pool_size:
        raise UserError(f"--k {k} is larger than the pool ({pool_size} accepted adapters in {config.db})")
    resolved = resolve_experiment(config, "audit")
    summary = run_experiment(resolved, results_path, executor, log)
    if summary.failed:
        raise UserError(f"{summary.failed} audit run(s) failed; see the failures table in {results_path}")
    specs = {spec.run_hash: spec for spec in expand_runs(resolved)}
    with ResultsStore(results_path, create=False) as store:
        rows = store.rows(specs)
    conditions: dict[str, dict[int, str]] = {name: {} for name in CONDITIONS}
    for row in rows:
        conditions[condition_of(specs[row["run_hash"]])][row["seed"]] = row["correct"]
    from lora_recycle.experiments.report import metrics_used

    result = verdict(conditions, resamples, bootstrap_seed)
    metric = ", ".join(metrics_used(rows))
    result["verdict"] += f" (metric: {metric}; with the target LoRA: it and the top {k - 1} selected)"
    return result | {"results": str(results_path), "k": k, "metric": metric}


def verdict(conditions: dict[str, dict[int, str]], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Accuracy intervals per condition, the key paired differences, and the two answers in words."""

    def diff(a: str, b: str | None = None) -> Interval:
        return bootstrap_difference(conditions[a], conditions[b] if b else None, resamples, seed)

    accuracy = {name: diff(name).to_dict() for name in CONDITIONS}
    comparisons = {
        "ours+target - target_lora": diff("ours+target", "target_lora"),
        "ours - target_lora": diff("ours", "target_lora"),
        "ours - prompting": diff("ours", "prompting"),
        "ours+target - random_init+target": diff("ours+target", "random_init+target"),
    }
    helps = comparisons["ours+target - target_lora"]
    transfer = comparisons["ours+target - random_init+target"]
    if helps.low > 0:
        beats = ("yes", f"Recycled adapters help beyond a LoRA of your own ({_pct(helps)}).")
    elif helps.high < 0:
        beats = ("no", f"Recycling does worse than a LoRA of your own ({_pct(helps)}).")
    else:
        beats = ("unclear", f"No clear difference from a LoRA of your own ({_pct(helps)}).")
    if transfer.low > 0:
        mechanism = ("transfer", f"The recycled adapters beat same-shape noise ({_pct(transfer)}): "
                                 "knowledge transferred.")
    elif beats[0] == "yes":
        mechanism = ("regularisation", f"Noise adapters do about as well ({_pct(transfer)}): the gain looks like "
                                       "regularisation, not transfer.")
    else:
        mechanism = ("none", f"Against same-shape noise: {_pct(transfer)}; no sign of transfer.")
    return {
        "accuracy": accuracy,
        "comparisons": {name: interval.to_dict() for name, interval in comparisons.items()},
        "beats_own_lora": beats[0],
        "mechanism": mechanism[0],
        "verdict": f"{beats[1]} {mechanism[1]}",
    }


def _pct(interval: Interval) -> str:
    level = round(interval.level * 100)
    return (f"{interval.estimate * 100:+.1f} points, {level}% CI [{interval.low * 100:+.1f}, "
            f"{interval.high * 100:+.1f}]")


def render_audit(result: dict[str, Any]) -> list[str]:
    """Lines for people: accuracy per condition with its interval, then the verdict."""
    lines = []
    for name, label in CONDITIONS.items():
        a = result["accuracy"][name]
        lines.append(f"  {label:<42} {a['estimate']:.3f}  [{a['low']:.3f}, {a['high']:.3f}]")
    lines.append(f"  ({a['seeds']} seeds x {a['examples']} test examples, k={result['k']}, "
                 f"{a['resamples']} bootstrap resamples)")
    lines.append("")
    lines.append(result["verdict"])
    return lines
