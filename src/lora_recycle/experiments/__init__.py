"""Experiments: run the paper's study (methods x tasks x k x seeds, with and without the target LoRA),
resumably, locally or on Ray; report its tables and figures; audit one task.

Typical use::

    config = load_config("experiments/smoke.yaml")
    resolved = resolve_experiment(config, "experiments/smoke.yaml")
    run_experiment(resolved, "results.db")
    write_report("results.db", "report/")
"""

from typing import TYPE_CHECKING

from lora_recycle.lazy import lazy_namespace

if TYPE_CHECKING:
    from lora_recycle.experiments.config import ExperimentConfig, load_config, resolve_experiment
    from lora_recycle.experiments.grid import RunSpec, expand_runs
    from lora_recycle.experiments.results import FORMAT_VERSION, ResultsStore
    from lora_recycle.experiments.runner import run_experiment

# public name -> module that defines it (imported on first use: reading a config or a results file never loads
# the runner, hence torch; see lora_recycle.lazy)
_EXPORTS = {
    "ExperimentConfig": "lora_recycle.experiments.config",
    "load_config": "lora_recycle.experiments.config",
    "resolve_experiment": "lora_recycle.experiments.config",
    "RunSpec": "lora_recycle.experiments.grid",
    "expand_runs": "lora_recycle.experiments.grid",
    "FORMAT_VERSION": "lora_recycle.experiments.results",
    "ResultsStore": "lora_recycle.experiments.results",
    "run_experiment": "lora_recycle.experiments.runner",
}

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

__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
