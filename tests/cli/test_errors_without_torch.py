"""Mistakes answer before torch is imported (~1-2 CPU-s a command), and a whole pool scan never imports it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lora_recycle.pool import Catalog

# runs the CLI in a fresh interpreter, then says on stderr whether torch was imported
PROBE = ("import sys\nfrom lora_recycle.cli import main\nrc = main(sys.argv[1:])\n"
         "sys.stderr.write('\\ntorch imported: %s\\n' % ('torch' in sys.modules))\nsys.exit(rc)\n")


def run_probe(*args: object) -> tuple[int, str, bool]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120)
    *message, marker = proc.stderr.strip().splitlines()
    return proc.returncode, "\n".join(message), marker == "torch imported: True"


@pytest.fixture(scope="module")
def truncated_adapter(adapter_dirs, tmp_path_factory) -> Path:
    """A PEFT adapter whose weights file lost its last bytes (a download cut short)."""
    folder = Path(shutil.copytree(adapter_dirs["all_r4"], tmp_path_factory.mktemp("cut") / "cut"))
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])
    return folder


def test_a_pool_scan_never_imports_torch(tiny_model_dir, adapter_dirs, truncated_adapter, tmp_path):
    pool = tmp_path / "pool"
    for name in ("all_r4", "qv_r8"):
        shutil.copytree(adapter_dirs[name], pool / name)
    shutil.copytree(truncated_adapter, pool / "cut")
    rc, message, torch_imported = run_probe("pool", "scan", pool, "--base-model", tiny_model_dir, "--db",
                                            tmp_path / "pool.db", "--no-require-license")
    assert rc == 0, message
    assert not torch_imported
    with Catalog(tmp_path / "pool.db", create=False) as catalog:
        status = {row["id"]: row["status"] for row in catalog.rows()}
    assert sorted(status.values()) == ["accepted", "accepted", "rejected"], status


@pytest.mark.parametrize("case", ["merge: bad adapter", "merge: --save-dtype", "evaluate: bad adapter",
                                  "select: no catalog", "merge: no --task for ours"])
def test_mistakes_answer_before_torch(case, tiny_model_dir, colour_task_dir, adapter_dirs, truncated_adapter,
                                      tmp_path):
    good = adapter_dirs["all_r4"]
    args, needle = {
        "merge: bad adapter": (["merge", "--model", tiny_model_dir, "--adapters", good, truncated_adapter,
                                "--method", "ties", "--out", tmp_path / "out"], "adapter cut"),
        "merge: --save-dtype": (["merge", "--model", tiny_model_dir, "--adapters", good, "--method", "ties",
                                 "--save-dtype", "int8", "--out", tmp_path / "out"], "--save-dtype 'int8'"),
        "evaluate: bad adapter": (["evaluate", "--model", tiny_model_dir, "--task", colour_task_dir, "--adapter",
                                   truncated_adapter], "adapter cut"),
        "select: no catalog": (["select", "--model", tiny_model_dir, "--db", tmp_path / "none.db", "--task",
                                colour_task_dir], "pool catalog not found"),
        "merge: no --task for ours": (["merge", "--model", tiny_model_dir, "--adapters", good, "--out",
                                       tmp_path / "out"], "give --task DIR"),
    }[case]
    rc, message, torch_imported = run_probe(*args)
    assert rc == 2 and needle in message, message
    assert not torch_imported
    assert not (tmp_path / "out").exists()
