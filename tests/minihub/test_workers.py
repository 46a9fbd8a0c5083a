"""Parallel hub builds: worker processes build the same pool, resumably, as one process does."""

import json
import shutil
from pathlib import Path

import pytest

from lora_recycle.adapters.card import read_card_data
from lora_recycle.minihub.hub import build_hub, hub_root


def _pool(root: Path) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    return {a["path"]: (a["task"], a["rank"], a["source_accuracy"], a["base_accuracy"]) for a in manifest["adapters"]}


def test_two_workers_rebuild_what_one_worker_built(tmp_path, cache_dir, tiny_hub):
    """Adapters trained in two worker processes match the one-process build, and a build resumes: only the
    missing adapters (and the missing base scores) are computed again, in the workers."""
    serial = tiny_hub  # built in one process (the tiny profile's default)
    other = tmp_path / "cache"  # a copy of that hub with adapters of three source tasks removed
    for part in ("tokenizers", "models"):  # extracting and building these again tests nothing here
        shutil.copytree(cache_dir / part, other / part)
    root = hub_root("tiny", other, 0)
    shutil.copytree(serial.root, root, ignore=shutil.ignore_patterns("pool.db", "manifest.json", "demo",
                                                                      "target-lora", "base-accuracy"))
    removed: dict[str, Path] = {}  # the first adapter of each of three source tasks: three groups of jobs
    for path, (task, *_) in _pool(serial.root).items():
        if task not in removed and len(removed) < 3:
            removed[task] = root / path
    kept = [root / a.relative_to(serial.root) for a in serial.adapters]
    kept = [a for a in kept if a not in removed.values()]
    before = {a: (a / "adapter_model.safetensors").stat().st_mtime_ns for a in kept}
    for gone in removed.values():
        shutil.rmtree(gone)
    parallel = build_hub("tiny", other, seed=0, workers=2)
    assert parallel.root == root
    ours, theirs = _pool(parallel.root), _pool(serial.root)
    assert ours.keys() == theirs.keys() and len(ours) == 8
    for path, (task, rank, own, base) in ours.items():
        assert (task, rank) == theirs[path][:2]
        assert base == pytest.approx(theirs[path][3], abs=0.02)  # thread counts differ: rounding, not results
        assert own == pytest.approx(theirs[path][2], abs=0.1)
    assert all("source_accuracy" in read_card_data(a) for a in removed.values())
    assert {a: (a / "adapter_model.safetensors").stat().st_mtime_ns for a in kept} == before


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc")
def test_a_worker_exits_when_its_build_is_killed(tmp_path):
    """Kill -9 the parent of a worker: the worker notices within seconds and exits (no orphan trainers)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, threading\n"
        "from lora_recycle.minihub import trainer\n"
        "threading.Thread(target=trainer._exit_with_parent, args=(int(sys.argv[1]),), daemon=True).start()\n"
        "threading.Event().wait()\n")
    parent = subprocess.Popen([sys.executable, "-c",
                               "import os, subprocess, sys; p = subprocess.Popen([sys.executable, sys.argv[1], "
                               "str(os.getpid())]); print(p.pid, flush=True); p.wait()", str(script)],
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    status = Path(f"/proc/{child}/status")
    for _ in range(150):
        # gone, or a zombie waiting for a reaper that a container's init may never be
        if not status.is_file() or "\nState:\tZ" in status.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"worker {child} still running after its parent was killed")


def test_progress_advances_once_per_adapter(tiny_hub):
    """Workers report each finished adapter (not each source task), so a long build's bar moves steadily."""
    from lora_recycle.minihub.hub import PROFILES
    from lora_recycle.minihub.pool import plan_pool
    from lora_recycle.minihub.tasks import SOURCE_TASKS
    from lora_recycle.minihub.trainer import TrainerSetup, job_groups, run_jobs

    hub = tiny_hub
    profile = PROFILES["tiny"]
    plans = plan_pool(list(SOURCE_TASKS), profile.pool_size, profile.adapter_steps, 0, profile.adapter_lr,
                      profile.adapter_batch_size)
    groups = job_groups(plans, hub.adapters, hub.tasks, {}, None)  # every adapter is built: each job is a check
    setup = TrainerSetup(hub.base_model, hub.base_model_id, "cpu", hub.precision, profile.source_eval_limit, hub.root)
    seen: list[int] = []
    run_jobs(groups, setup, 2, seen.append)
    assert seen == [1] * len(plans) and len(groups) > 1
