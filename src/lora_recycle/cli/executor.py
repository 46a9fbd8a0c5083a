"""The ``--executor`` / ``--ray-address`` pair, shared by ``experiment run``, ``select`` and ``merge``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from lora_recycle.experiments.executors import Executor
    from lora_recycle.selection.sharded import Workers

ExecutorOpt = Annotated[str, typer.Option(
    "--executor", help="local (default: in this process) or ray (Ray tasks; a pool is scored in shards, one model per "
    "worker).")]
RayAddressOpt = Annotated[
    str | None, typer.Option("--ray-address", help="Ray cluster address (e.g. auto); default: start Ray locally.")
]


@contextlib.contextmanager
def executor_for(name: str, ray_address: str | None) -> Iterator[Executor]:
    """The chosen executor, shut down on the way out (a local Ray instance started here is stopped)."""
    from lora_recycle.experiments.executors import make_executor

    chosen = make_executor(name, ray_address)
    try:
        yield chosen
    finally:
        shutdown = getattr(chosen, "shutdown", None)
        if shutdown is not None:
            shutdown()


def selection_workers(executor: Executor, model: Path, device: str, dtype: str) -> Workers | None:
    """Where ``select`` / ``merge`` score the pool: None in this process (local), else shards on the executor."""
    from lora_recycle.experiments.executors import LocalExecutor
    from lora_recycle.selection.sharded import Workers

    return None if isinstance(executor, LocalExecutor) else Workers(executor, str(model), device, dtype)
