"""Parallel hub builds: worker processes build the same pool, resumably, as one process does."""

import json
import shutil
from pathlib import Path

import pytest

from lora_recycle.adapters.card import read_card_data
from lora_recycle.minihub.hub import build_hub


def _pool(root: Path) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    return {a["path"]: (a["task"], a["rank"], a["source_accuracy"], a["base_accuracy"]) for a in manifest["adapters"]}


def test_two_workers_build_the_same_pool_and_resume(tmp_path, cache_dir):
    serial = build_hub("tiny", cache_dir, seed=0, workers=1)
    other = tmp_path / "cache"  # its own tiny base model, built from the same seed
    parallel = build_hub("tiny", other, seed=0, workers=2)
    assert parallel.root.name == serial.root.name
    ours, theirs = _pool(parallel.root), _pool(serial.root)
    assert ours.keys() == theirs.keys() and len(ours) == 8
    for path, (task, rank, own, base) in ours.items():
        assert (task, rank) == theirs[path][:2]
        assert base == pytest.approx(theirs[path][3], abs=0.02)  # thread counts differ: rounding, not results
        assert own == pytest.approx(theirs[path][2], abs=0.1)
    # an interrupted build resumes: remove two adapters, rebuild, only those are trained again
    kept = parallel.adapters[2]
    before = (kept / "adapter_model.safetensors").stat().st_mtime_ns
    for gone in parallel.adapters[:2]:
        shutil.rmtree(gone)
    again = build_hub("tiny", other, seed=0, workers=2)
    assert all((a / "adapter_config.json").is_file() and "source_accuracy" in read_card_data(a)
               for a in again.adapters)
    assert (kept / "adapter_model.safetensors").stat().st_mtime_ns == before
