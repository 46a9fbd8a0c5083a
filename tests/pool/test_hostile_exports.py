"""Nothing poisoned reaches an export: merge and evaluate refuse non-finite or changed adapters (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hostile_corpus import build_hostile_tree

from lora_recycle.adapters import LoraAdapter, LoraModule, read_adapter, write_peft_adapter
from lora_recycle.errors import UserError
from lora_recycle.pool import Catalog, load_pool_adapters, scan_pool

CLI = str(Path(sys.executable).parent / "lora-recycle")


@pytest.fixture(scope="module")
def tree(factory, tmp_path_factory):
    return build_hostile_tree(factory, tmp_path_factory.mktemp("hostile-exports") / "tree")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "name, needle",
    [
        ("hostile/alpha-nan", "lora_alpha"),
        ("hostile/nan-tensor", "NaN or Inf"),
        ("hostile/rank-pattern-redos", "catastrophic backtracking"),
        ("hostile/r-10e400", "field r"),
        ("hostile/offsets-overlap", "data overlaps the previous tensor"),  # read through the scan's checks
    ],
)
def test_merge_refuses_poisoned_adapters(tree, base_dir, tmp_path, name, needle):
    out = tmp_path / "merged"
    proc = run_cli("merge", "--model", str(base_dir), "--adapters", str(tree / name), "--method", "average",
                   "--out", str(out))
    assert_one_line_error(proc, needle)
    assert not (out / "adapter_model.safetensors").exists()


def test_evaluate_refuses_a_redos_pattern_without_hanging(tree, base_dir, colour_task_dir):
    proc = run_cli("evaluate", "--model", str(base_dir), "--task", str(colour_task_dir),
                   "--adapter", str(tree / "hostile/rank-pattern-redos"))
    assert_one_line_error(proc, "rank_pattern")


def test_reader_refuses_nonfinite_factors_and_scales(tree):
    with pytest.raises(UserError, match="NaN or Inf"):
        read_adapter(tree / "hostile/nan-tensor")
    with pytest.raises(UserError, match="lora_alpha"):
        read_adapter(tree / "hostile/alpha-nan")


def test_writer_refuses_an_update_that_overflows_the_export_dtype(tmp_path):
    module = LoraModule(torch.ones(2, 32), torch.full((32, 2), 300.0), scale=300.0)  # 90000 > float16 max
    adapter = LoraAdapter({"model.layers.0.self_attn.q_proj": module})
    with pytest.raises(UserError, match="beyond float16's 6.55e\\+04; nothing written"):
        write_peft_adapter(adapter, tmp_path / "out", "tiny-llama", dtype=torch.float16)
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "out" / "adapter_config.json").exists()
    write_peft_adapter(adapter, tmp_path / "ok", "tiny-llama", dtype=torch.float32)  # fine in float32


@pytest.fixture()
def scanned_copy(tree, base_spec, tmp_path):
    pool = tmp_path / "pool"
    shutil.copytree(tree / "a-good", pool / "a-good")
    db = tmp_path / "pool.db"
    with Catalog(db) as catalog:
        scan_pool([pool], base_spec, catalog)
    assert load_pool_adapters(db, ["a-good"])[0].adapter_id == "a-good"
    return pool / "a-good", db


def _rewrite_keeping_size_and_mtime(path: Path, edit) -> None:
    stat = path.stat()
    data = path.read_bytes()
    new = edit(data)
    assert len(new) == len(data) and new != data
    path.write_bytes(new)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_catalog_load_refuses_weights_changed_with_the_same_size_and_mtime(scanned_copy):
    adapter_dir, db = scanned_copy
    weights = adapter_dir / "adapter_model.safetensors"
    _rewrite_keeping_size_and_mtime(weights, lambda data: data[:-4] + bytes(4))  # last float of B -> 0.0
    with pytest.raises(UserError, match="sha256 differs"):
        load_pool_adapters(db, ["a-good"])


def test_catalog_load_refuses_a_config_changed_with_the_same_size_and_mtime(scanned_copy):
    adapter_dir, db = scanned_copy
    config = adapter_dir / "adapter_config.json"
    alpha = json.loads(config.read_text())["lora_alpha"]
    _rewrite_keeping_size_and_mtime(
        config, lambda data: data.replace(f'"lora_alpha": {alpha}'.encode(), f'"lora_alpha": {alpha + 1}'.encode())
    )
    with pytest.raises(UserError, match="changed since the scan"):
        load_pool_adapters(db, ["a-good"])
