"""Where runs execute: in this process (default) or as one Ray task per run on a cluster.

An executor maps a module-level function over argument tuples and yields ``(index, result)`` as
results come back; the driver alone turns results into database rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from lora_recycle.errors import UserError

# Passed to Ray workers so they behave like the driver (offline, same cache).
_FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "LORA_RECYCLE_CACHE", "TOKENIZERS_PARALLELISM")


class Executor(Protocol):
    def map(self, fn: Callable[..., Any], items: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """Call ``fn(*item)`` for every item; yield ``(index of item, result)`` in completion order."""
        ...


class LocalExecutor:
    """Runs one item after the other in this process (models stay loaded between runs)."""

    def map(self, fn: Callable[..., Any], items: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        for index, item in enumerate(items):
            yield index, fn(*item)


class RayExecutor:
    """One Ray task per item; a GPU per task when the cluster has GPUs, else one CPU.

    ``address=None`` starts a local Ray instance (with ``num_cpus`` CPUs); otherwise connects to
    ``address`` (e.g. ``auto`` or ``ray://head:10001``). Paths in the runs (model, catalog, tasks,
    artifacts) must be visible to every node, e.g. on a shared file system.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_in_flight: int = 256) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.max_in_flight = max_in_flight
        self._started_here = False

    def _ensure_ray(self):
        try:
            import ray
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install 'lora-recycle[ray]'") from None
        if not ray.is_initialized():
            env_vars = {key: os.environ[key] for key in _FORWARDED_ENV if key in os.environ}
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "runtime_env": {"env_vars": env_vars}}
            if self.address is None:
                kwargs["num_cpus"] = self.num_cpus or os.cpu_count() or 1
            else:
                kwargs["address"] = self.address
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise UserError(f"--ray-address {self.address}: cannot connect to Ray ({exc})") from None
            self._started_here = True
        return ray

    def gpus_per_task(self) -> int:
        """1 when the cluster offers GPUs (CUDA nodes register them with Ray), else 0."""
        ray = self._ensure_ray()
        return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0

    def map(self, fn: Callable[..., Any], items: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        if not items:
            return
        ray = self._ensure_ray()
        remote = ray.remote(num_cpus=1, num_gpus=self.gpus_per_task(), max_retries=0)(fn)
        pending: dict[Any, int] = {}
        queue = list(enumerate(items))
        queue.reverse()
        while queue or pending:
            while queue and len(pending) < self.max_in_flight:
                index, item = queue.pop()
                pending[remote.remote(*item)] = index
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                yield pending.pop(ref), ray.get(ref)

    def shutdown(self) -> None:
        """Stop the local Ray instance if this executor started it."""
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False


def make_executor(name: str, ray_address: str | None = None) -> LocalExecutor | RayExecutor:
    """``local`` or ``ray`` (optionally at ``ray_address``)."""
    if name == "local":
        if ray_address:
            raise UserError("--ray-address needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(ray_address)
    raise UserError(f"--executor {name!r}: choose local or ray")
