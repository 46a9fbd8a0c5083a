"""Experiments: run the paper's study (methods x tasks x k x seeds, with and without the target LoRA),
resumably, locally or on Ray; report its tables and figures; audit one task.

Typical use::

    config = load_config("experiments/smoke.yaml")
    resolved = resolve_experiment(config, "experiments/smoke.yaml")
    run_experiment(resolved, "results.db")
    write_report("results.db", "report/")
"""

from lora_recycle.experiments.config import ExperimentConfig, load_config, resolve_experiment
from lora_recycle.experiments.grid import RunSpec, expand_runs
from lora_recycle.experiments.results import FORMAT_VERSION, ResultsStore
from lora_recycle.experiments.runner import run_experiment

__all__ = [
    "FORMAT_VERSION",
    "ExperimentConfig",
    "ResultsStore",
    "RunSpec",
    "expand_runs",
    "load_config",
    "resolve_experiment",
    "run_experiment",
]
